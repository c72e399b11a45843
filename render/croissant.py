"""The Croissant 1.0 JSON-LD description of a dataset file (what a datasets venue asks for), built as plain JSON."""

from __future__ import annotations

import json

# The Croissant 1.0 @context (https://docs.mlcommons.org/croissant/docs/croissant-spec.html), with the
# Responsible-AI vocabulary.
CONTEXT = {
    "@language": "en", "@vocab": "https://schema.org/", "citeAs": "cr:citeAs", "column": "cr:column",
    "conformsTo": "dct:conformsTo", "cr": "http://mlcommons.org/croissant/", "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"}, "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/", "equivalentProperty": "cr:equivalentProperty", "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract", "field": "cr:field", "fileProperty": "cr:fileProperty", "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet", "format": "cr:format", "includes": "cr:includes", "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath", "key": "cr:key", "md5": "cr:md5", "parentField": "cr:parentField", "path": "cr:path",
    "recordSet": "cr:recordSet", "references": "cr:references", "regex": "cr:regex", "repeated": "cr:repeated",
    "replace": "cr:replace", "samplingRate": "cr:samplingRate", "sc": "https://schema.org/", "separator": "cr:separator", "source": "cr:source",
    "subField": "cr:subField", "transform": "cr:transform",
}
LICENSE = "https://opensource.org/licenses/MIT"  # the project's licence (pyproject.toml) covers the rendered data
CREATOR = {"@type": "Organization", "name": "inbetween-bench contributors"}


def croissant(file_name: str, sha256: str, description: str, version: str, command: str,
              splits: dict[str, list[tuple[str, str, str]]]) -> str:
    """Croissant JSON-LD text for one HDF5 file.

    splits: split -> [(array name, Croissant data type, description)], one record set per split
    whose fields are that split's HDF5 datasets (`SPLIT/ARRAY`, read with any HDF5 reader).
    """
    file_id = file_name
    record_sets = []
    for split, fields in splits.items():
        record_sets.append({
            "@type": "cr:RecordSet", "@id": split, "name": split,
            "description": f"The {split} split: one record per sequence (HDF5 group /{split}).",
            "field": [{"@type": "cr:Field", "@id": f"{split}/{name}", "name": f"{split}/{name}",
                       "description": text, "dataType": data_type,
                       "source": {"fileObject": {"@id": file_id}, "extract": {"column": f"{split}/{name}"}}}
                      for name, data_type, text in fields],
        })
    doc = {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": "http://mlcommons.org/croissant/1.0",
        "name": file_name.removesuffix(".h5"),
        "description": description,
        "license": LICENSE,
        "creator": CREATOR,
        "version": version,
        "citeAs": "inbetween-bench: synthetic rendered sequences for image in-betweening. Regenerate with: " + command,
        "isAccessibleForFree": True,
        "keywords": ["image in-betweening", "frame interpolation", "synthetic", "disentanglement", "benchmark"],
        "distribution": [{
            "@type": "cr:FileObject", "@id": file_id, "name": file_id, "contentUrl": file_name,
            "encodingFormat": "application/x-hdf5", "sha256": sha256,
            "description": f"HDF5 file, format inbetween-sequences (docs/dataset-format.md). Regenerate: {command}",
        }],
        "recordSet": record_sets,
        "rai:dataCollection": "Rendered, not collected: every frame is drawn by pyrender (Mesa llvmpipe) from "
                              "randomly sampled object poses; the command above regenerates the file bit for bit.",
        "rai:dataCollectionType": "Synthetic data",
        "rai:hasSyntheticData": True,
        "rai:personalSensitiveInformation": "None: the images show untextured geometric objects (a teapot and "
                                            "primitive shapes) on a black background; no people, places or text.",
        "rai:dataBiases": "Poses and positions are sampled uniformly in stated ranges; a held-out region of factor "
                          "space is excluded from train and val on purpose (see the file's `heldout` attribute).",
        "rai:dataLimitations": "Single fixed camera and light, no textures or backgrounds, small images: results "
                               "do not transfer to natural video without further evidence.",
        "rai:dataUseCases": "Benchmarking image in-betweening and disentangled representation learning: train on "
                            "train, select on val, report test and heldout.",
        "rai:dataSocialImpact": "Low: a research benchmark of synthetic objects.",
        "rai:dataReleaseMaintenancePlan": "Files are regenerated from the command, not maintained; the format "
                                          "version in the file says which reader it needs.",
    }
    return json.dumps(doc, indent=2, sort_keys=False) + "\n"
