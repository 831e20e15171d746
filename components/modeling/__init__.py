"""Modeling: source encoders, adapters, backbone with `<USER>`, TMoLE layers and embedding extraction."""
