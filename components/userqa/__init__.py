"""UserQA synthesis (InstructUE 3.2): grounded facts, instruction families, answer writers, verification."""
