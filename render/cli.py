"""Click commands `render-dataset` and `inspect-dataset`: parse, build the config, call one library function."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ibutil.cli import user_errors
from ibutil.errors import UserError
from ibutil.preempt import StopFlag, preemption_exits


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--dof", type=int, default=2, show_default=True,
              help="Preset: 1 = one object turning about x (train frames at integer degrees, test frames at half "
                   "degrees); 2 = one object rotating about x and y along random straight lines in angle space; "
                   "6 = three objects moving in the image plane (see --motion).")
@click.option("--size", type=int, default=32, show_default=True, help="Image side in pixels (8..1024).")
@click.option("--frames", type=int, default=None,
              help="Frames per sequence (dof 1: steps per full turn). Default: 360 for dof 1, 50 otherwise.")
@click.option("--train-sequences", type=int, default=None,
              help="Training sequences (default 200 for dof 2 and 6; dof 1 has exactly one turn).")
@click.option("--test-sequences", type=int, default=None,
              help="Test sequences (default 50 for dof 2 and 6; dof 1 has exactly one turn).")
@click.option("--val-sequences", type=int, default=None,
              help="Validation sequences, drawn like test from their own stream, for model selection "
                   "(default: as many as test; dof 1: one turn at quarter-step offsets).")
@click.option("--heldout-sequences", type=int, default=None,
              help="Sequences passing through the held-out region (default: as many as test; dof 1: one turn; "
                   "0 under --protocol paper).")
@click.option("--motion", default="linear", show_default=True,
              help="dof 6 only. linear: each object moves at constant velocity on a straight line that stays "
                   "inside the frame, so every middle frame is determined by its neighbours. bounce: objects "
                   "reflect off the borders (the v1 motion), a deliberately ambiguous task.")
@click.option("--protocol", default="heldout", show_default=True,
              help="heldout: train and val avoid a region of factor space that only the heldout split shows "
                   "(dof 1: rot_x within 20 deg of 180; dof 2: poses within 30 deg geodesic of (180, 0); dof 6: "
                   "an object centre in the top-right corner x, y >= 0.3). paper: no cut and an empty heldout "
                   "split; with --dof 1 this is the paper's exact protocol (full 360-step training turn).")
@click.option("--heldout-margin", type=float, default=None,
              help="Smallest factor distance between a held-out frame and any train or val frame, in the "
                   "factor unit: degrees for dof 1 and 2 (default 10), ndc for dof 6 (default 0.2).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of every random draw; each split uses its own disjoint stream of it.")
@click.option("--object", "object_name", default="teapot", show_default=True,
              help="Object for dof 1/2, or the first of the three for dof 6: teapot, cube, sphere, cylinder, "
                   "cone, torus.")
@click.option("--supersample", type=int, default=None,
              help="Render at k x size and box-filter down, for anti-aliased edges. Default: 3 (9 samples per pixel) up to 85 px, "
                   "then fewer so the render stays within 256 px.")
@click.option("--workers", type=int, default=os.cpu_count() or 1, show_default=True,
              help="Render processes (spawned, one GL context each). The output is identical for any count.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output .h5 path. Default: data/dof<D>-<object>-<size>px-seed<seed>.h5. A sha256 manifest "
                   "(.h5.sha256), a dataset card (.h5.md) and a Croissant description (.croissant.json) are "
                   "written beside it.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@click.option("--shard", default=None, metavar="I/N",
              help="Render only shard I of N (0-based): a contiguous block of each split's sequences, identical "
                   "to the same sequences of the unsharded file. A complete shard file is skipped on rerun. "
                   "Join shards with merge-dataset.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def render_dataset(dof, size, frames, train_sequences, test_sequences, val_sequences, heldout_sequences, motion,
                   protocol, heldout_margin, seed, object_name, supersample, workers, out, overwrite, shard, quiet):
    """Render a synthetic in-betweening dataset into an HDF5 file (format v2, docs/dataset-format.md).

    Example: render-dataset --dof 2 --out data/dof2.h5

    Ctrl-C or SIGTERM stops it after the sequence in hand (a second one at once): no output, no
    temporary file and no worker process are left, and it exits 130 (SIGINT) or 143 (SIGTERM).
    """
    from render.dataset import render_dataset as run
    from render.presets import RenderConfig

    with user_errors(), preemption_exits():
        config = RenderConfig(dof=dof, size=size, frames=frames, train_sequences=train_sequences,
                              test_sequences=test_sequences, val_sequences=val_sequences,
                              heldout_sequences=heldout_sequences, motion=motion, protocol=protocol,
                              heldout_margin=heldout_margin, seed=seed, object=object_name, supersample=supersample)
        run(config, out=out, workers=workers, overwrite=overwrite, progress=not quiet,
            shard=None if shard is None else _parse_shard(shard))


def _parse_shard(text: str) -> tuple[int, int]:
    index, _, count = text.partition("/")
    if not (index.strip().isdigit() and count.strip().isdigit()):
        raise UserError(f"--shard must look like I/N (e.g. 0/4), not {text!r}")
    return int(index), int(count)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("shards", nargs=-1, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="The merged .h5 file.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def merge_dataset(shards, out, overwrite, quiet):
    """Join the shard files of one render-dataset --shard I/N job into one format-v2 file.

    Every shard is verified first; shards of different configs, seeds or renderers, and missing or
    duplicated shards, are refused. The result equals the unsharded render byte for byte. Ctrl-C or
    SIGTERM stops it after the sequence in hand, leaving no output: exit 130 (SIGINT) or 143 (SIGTERM).
    """
    from render.dataset import merge_shards

    with user_errors(), preemption_exits():
        click.echo(f"wrote {merge_shards(list(shards), out, overwrite=overwrite, progress=not quiet)}")


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Check the sha256 manifest beside the file and every array's content hash.")
@click.option("--sheet", type=click.Path(path_type=Path), default=None,
              help="Write a contact sheet PNG: rows of sequences (frames, then masks), evenly spaced frames.")
@click.option("--gif", type=click.Path(path_type=Path), default=None, help="Write an animated GIF of one sequence.")
@click.option("--split", type=click.Choice(["train", "val", "test", "heldout"]), default="train", show_default=True,
              help="Split shown in the sheet and GIF.")
@click.option("--sequence", type=int, default=0, show_default=True, help="Sequence index for the GIF.")
@click.option("--rows", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Sequences in the contact sheet (each a row of frames and a row of masks).")
def inspect_dataset(file, verify, sheet, gif, split, sequence, rows):
    """Print the summary of a dataset FILE, verify its schema and checksums, and draw it.

    Ctrl-C or SIGTERM stops a long verification after the sequence or block in hand: exit 130 or 143.
    """
    from ibdata import h5format
    from render.inspect import contact_sheet, sequence_gif, summary

    with user_errors(), preemption_exits(), StopFlag() as stop:
        def check():  # the safe points: each sequence or block verified, and between the steps
            stop.check(f"inspection of {file} stopped; a sheet or GIF it printed is complete; run it again")

        click.echo(summary(file))
        if verify:
            result = h5format.verify(file, check=check)
            click.echo(f"  verified    schema ok; {len(result.arrays)} array hashes ok; sha256 manifest {result.manifest}")
        check()
        if sheet is not None:
            click.echo(f"  sheet       {contact_sheet(file, sheet, split=split, sequences=rows)}")
            check()
        if gif is not None:
            click.echo(f"  gif         {sequence_gif(file, gif, split=split, sequence=sequence)}")
