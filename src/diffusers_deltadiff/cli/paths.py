"""Which files `upscale` reads and writes: inputs from files, folders and globs; one output path each, checked before
the model loads (collisions, name lengths, existing files, inputs never overwritten).
"""

import glob
import os
from pathlib import Path

import PIL.Image

from ..console import CLIError, warning
from ..data import IMAGE_EXTENSIONS, list_images
from ..image_io import FORMATS, missing_folders


def glob_root(pattern: str) -> tuple[Path, str]:
    """`(folder, rest)`: the literal folder a glob starts from and the pattern below it."""
    parts = Path(pattern).parts
    literal = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
    return Path(*parts[:literal]) if literal else Path("."), str(Path(*parts[literal:]))


def glob_files(pattern: str) -> tuple[Path, list[Path]]:
    """
    The files matching a glob, and its literal folder. `**` is walked like a folder argument: symbolic links to
    folders are not followed, so a link back up the tree cannot make it loop.
    """
    root, rest = glob_root(pattern)
    if not rest or rest == ".":
        return root, [root] if os.path.isfile(root) else []
    return root, sorted(p for p in root.glob(rest) if p.is_file())


def is_inside(path: Path, folder: Path) -> bool:
    """Whether `path` lies in `folder` or below it (both resolved)."""
    return path == folder or folder in path.parents


def collect_inputs(inputs: list[str], output: Path | None = None) -> tuple[list[tuple[Path, Path]], list[str]]:
    """
    `(file, path relative to the output folder)` for files, folders (recursive) and globs; and errors.

    Files already in `output` are not taken from a folder or glob that contains it, so that a rerun does not upscale
    the previous run's results.
    """
    found, errors, skipped = [], [], 0
    named, output = output, output.resolve() if output is not None else None

    def keep(files: list[Path], root: Path) -> list[Path]:
        nonlocal skipped
        if output is None or output == root.resolve() or not is_inside(output, root.resolve()):
            return files
        kept = [f for f in files if not is_inside(f.resolve(), output)]
        skipped += len(files) - len(kept)
        return kept

    for item in inputs:
        path = Path(item)
        if not item:
            errors.append("'': empty path")
        elif os.path.isdir(path):  # os.path's tests: False, not an OSError, for a name too long to exist
            files = keep([Path(f) for f in list_images(item)], path)
            if not files:
                errors.append(f"{item}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
            found += [(f, f.relative_to(path)) for f in files]
        elif os.path.isfile(path):
            found.append((path, Path(path.name)))
        elif os.path.exists(path):
            errors.append(f"{item}: not a regular file (a device, pipe or socket)")
        elif glob.has_magic(item):
            root, matches = glob_files(item)
            matches = keep(matches, root)
            if not matches:
                errors.append(f"{item}: no file matches this pattern")
            found += [(m, Path(m.name)) for m in matches]
        else:
            errors.append(f"{item}: no such file or folder")
    if skipped:
        warning(f"{named}: {skipped} file(s) in the output folder are not taken as inputs")
    unique, seen = [], set()
    for source, relative in found:  # one file named twice (`a.png ./a.png`, a folder and a file in it) runs once
        if (source.resolve(), relative) not in seen:
            seen.add((source.resolve(), relative))
            unique.append((source, relative))
    return unique, errors


def image_extension(path: Path) -> str | None:
    """The lower-case extension of `path` when it names an image file Pillow knows, else `None`."""
    suffix = path.suffix.lower()
    return suffix.lstrip(".") if suffix in PIL.Image.registered_extensions() else None


def output_file(output: Path) -> bool:
    """Whether `-o` names one image file rather than a folder."""
    return image_extension(output) is not None and not os.path.isdir(output)


def output_path(output: Path, relative: Path, fmt: str | None, single: bool) -> Path:
    if single and output_file(output):
        return output
    extension = fmt or relative.suffix.lower().lstrip(".")
    return output / relative.with_suffix("." + (extension if extension in FORMATS else "png"))


def steps_path(dest: Path) -> Path:
    return dest.with_name(dest.stem + "_steps" + dest.suffix)


def check_output_flags(args, single: bool, count: int):
    """`-o` and `--format` together, before the model loads: a file name must fit the run and the format."""
    output = Path(args.output)
    if not output_file(output):
        return
    extension = image_extension(output)
    if not single:
        raise CLIError(f"-o {output}: a file name, but there are {count} inputs: pass a folder")
    if extension not in FORMATS:
        raise CLIError(f"-o {output}: cannot write .{extension} files (use .png, .jpg, .jpeg or .webp, or a folder)")
    if args.format and FORMATS[args.format] != FORMATS[extension]:
        raise CLIError(
            f"-o {output}: the name says {FORMATS[extension]} but --format {args.format} asks for "
            f"{FORMATS[args.format]} (drop --format, or name the file {output.with_suffix('.' + args.format)})"
        )


def name_max(folder: Path) -> int:
    """The longest file name the file system of `folder` (or of its nearest existing parent) accepts."""
    try:
        return os.pathconf(missing_folders(folder)[0], "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def plan_outputs(files, output: Path, args, single: bool) -> tuple[list[tuple[Path, Path, list[Path]]], list[str]]:
    """
    `(source, dest, outputs)` for every input that can be written, and an error for every one that cannot, decided
    before anything is written: an output that would replace an input of the run (even with `--overwrite`), two
    inputs with one output, an existing output without `--overwrite` or `--skip-existing`, a name too long.

    With `--skip-existing`, `outputs` lists only the files still missing, and an input whose files all exist is in
    neither list (skipped).
    """
    inputs = {source.resolve(): source for source, _ in files}
    claimed: dict[Path, Path] = {}
    jobs, errors = [], []
    for source, relative in files:
        dest = output_path(output, relative, args.format, single)
        outputs = [dest, steps_path(dest)] if args.save_steps else [dest]
        problem = None
        for out in outputs:
            resolved = out.resolve()
            if resolved in inputs:
                problem = f"{source}: the output {out} would replace the input {inputs[resolved]}"
            elif resolved in claimed:
                problem = (
                    f"{source}: its output {out} is also the output of {claimed[resolved]} "
                    "(same name: upscale them into separate folders)"
                )
            elif os.path.lexists(out):  # a file, a folder or a link, even a broken one; False for a name too long
                if not (args.overwrite or args.skip_existing):
                    problem = f"{out}: already exists (pass --overwrite to replace it)"
                elif not out.is_file():
                    problem = f"{out}: exists and is not a file"
            elif len(os.fsencode(out.name)) > name_max(out.parent):
                problem = f"{source}: the output name {out.name} is too long for this file system"
            if problem:
                break
        if problem:
            errors.append(problem)
            continue
        claimed.update({out.resolve(): source for out in outputs})
        missing = missing_outputs(outputs, args)
        if missing:
            jobs.append((source, dest, missing))
    return jobs, errors


def missing_outputs(outputs: list[Path], args) -> list[Path]:
    """The outputs to write: all of them, or with `--skip-existing` those that do not exist."""
    if not args.skip_existing:
        return outputs
    return [out for out in outputs if not os.path.lexists(out)]


def check_output_folder(folder: Path):
    """That `folder` exists or can be made, without making it (nothing is left behind if the run stops early)."""
    existing = missing_folders(folder)[0]
    if not existing.is_dir():
        raise CLIError(f"{folder}: cannot create the output folder ({existing} is not a folder)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CLIError(f"{folder}: output folder is not writable")


def remove_empty(created: list[Path]):
    for path in reversed(created):
        try:
            path.rmdir()
        except OSError:
            pass
