"""Pure DICOM code: scanning and series selection, volume assembly and geometry, SEG/SR building."""
