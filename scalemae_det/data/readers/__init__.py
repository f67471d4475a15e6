"""Label readers: one module per label format, each turning its format into the chipper's scenes."""
