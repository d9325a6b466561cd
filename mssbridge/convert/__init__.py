"""Pure conversions between Matrix events and MSSanté mail: no I/O, no clock."""
