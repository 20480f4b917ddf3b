"""NiftiConverter: decode the series into a HU volume with exact geometry (NIfTI file optional)."""

from __future__ import annotations

from ..chain import Context, Instance, Module, Option, SkipInstance
from ..dicom.volume import GeometryRules, VolumeRejected, assemble, contrast_from_image
from ..io import atomic_path


class NiftiConverter(Module):
    options = {
        "irregular_slices": Option(str, "reject", "missing slices / uneven spacing", choices=("reject", "resample")),
        "gantry_tilt": Option(str, "resample", "tilted acquisitions", choices=("resample", "reject")),
        "min_slices": Option(int, 3, "fewest slices that make a volume"),
        "detect_contrast": Option(str, "header", "contrast evidence read here: header (ContrastBolus*), "
                                  "header+image (adds a whole-image test, for chains without HeartLocator, "
                                  "which judges the heart's blood), off", choices=("header", "header+image", "off")),
        "write_nifti": Option(bool, False, "also write the volume as NIfTI"),
        "nifti_name": Option(str, "ct.nii.gz", "file name of the NIfTI output in the series folder"),
    }

    def run(self, instance: Instance, ctx: Context) -> None:
        rules = GeometryRules(
            irregular=self.opts["irregular_slices"],
            gantry_tilt=self.opts["gantry_tilt"],
            min_slices=self.opts["min_slices"],
        )
        try:
            volume, warnings = assemble(instance.series, rules)
        except VolumeRejected as why:
            raise SkipInstance(str(why)) from None
        for message in warnings:
            instance.warn(message)
        instance.volume = volume
        instance.report["geometry"] = {
            "shape_zyx": list(volume.hu.shape),
            "spacing_zyx_mm": [round(v, 5) for v in volume.spacing_zyx],
            "origin_lps_mm": [round(v, 4) for v in volume.origin_lps],
            "direction": [round(v, 6) for v in volume.direction],
            "resampled": volume.resampled,
            "gantry_tilt_deg": volume.acquisition.get("gantry_tilt_deg"),
        }
        instance.report["acquisition"] = volume.acquisition
        mode = self.opts["detect_contrast"]
        if mode == "off":
            volume.acquisition["contrast"], volume.acquisition["contrast_evidence"] = False, ""
        elif mode == "header+image" and not volume.acquisition.get("contrast"):
            evidence = contrast_from_image(volume.hu, volume.spacing_zyx)
            volume.acquisition["contrast"], volume.acquisition["contrast_evidence"] = bool(evidence), evidence
        if volume.acquisition.get("contrast"):
            instance.warn(f"contrast-enhanced CT ({volume.acquisition['contrast_evidence']})")
        if self.opts["write_nifti"]:
            import SimpleITK as sitk

            target = ctx.output_dir / instance.key / self.opts["nifti_name"]
            with atomic_path(target) as tmp:
                sitk.WriteImage(volume.to_sitk(), str(tmp), useCompression=True)
            instance.outputs["nifti"] = str(target.relative_to(ctx.output_dir))
