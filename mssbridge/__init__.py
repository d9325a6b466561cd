"""mssbridge: a secure bridge between Matrix health instant messaging and MSSanté mail."""

__version__ = "0.1.0"
