"""jpki: My Number Card (個人番号カード) and JPKI for Python."""

__version__ = "0.1.0"
