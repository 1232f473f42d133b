"""flowno-io."""
