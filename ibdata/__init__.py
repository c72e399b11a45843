"""The dataset files on the ground floor: the HDF5 format, its header, the triplet readers and the frames' value range; no GL."""
