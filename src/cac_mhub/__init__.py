"""cac-mhub: DICOM-native coronary artery calcium scoring from chest CT."""

__version__ = "0.1.0"
