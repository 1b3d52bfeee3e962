"""Recipe files (`python training/train_deltadiff.py @recipe.args`) and `--start_sha256`, tried as a hostile user
would: missing, unreadable, not UTF-8, with a byte-order mark or CRLF, unclosed quotes, `#` inside a word,
including one another or themselves; SHA-256s in odd spellings, without a start, for a start that changed."""

import hashlib
from pathlib import Path

import pytest

from conftest import load_trainer
from diffusers_deltadiff.testing_utils import tiny_lossless_pipeline


ROOT = Path(__file__).resolve().parents[1]
BASE = "--lossless_latent --train_data_dir data\n"


@pytest.fixture(scope="module")
def trainer():
    return load_trainer()


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def flag_error(trainer, capsys, argv) -> str:
    """The one error line of a flag error (exit status 2)."""
    with pytest.raises(SystemExit) as exit:
        trainer.parse_args(argv)
    assert exit.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1, errors
    return errors[0]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.args", None, "@missing.args: cannot read the recipe (No such file or directory)"),
        ("folder", "DIR", "@folder: cannot read the recipe (Is a directory)"),
        ("quote.args", BASE + "--output_dir 'runs/a\n", "@quote.args, line 2: No closing quotation"),
        (
            "latin1.args",
            BASE.encode() + "--output_dir caf\xe9\n".encode("latin-1"),
            "@latin1.args: the recipe is not UTF-8",
        ),
    ],
)
def test_an_unusable_recipe_is_a_flag_error_naming_it(trainer, here, capsys, name, content, message):
    """Before: an unclosed quote was a `ValueError` traceback and a Latin-1 file a `UnicodeDecodeError` one."""
    if content == "DIR":
        (here / name).mkdir()
    elif content is not None:
        (here / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    assert message in flag_error(trainer, capsys, [f"@{name}"])


def test_a_recipe_that_includes_itself_is_a_flag_error(trainer, here, capsys):
    """Before: a `RecursionError` traceback (directly or through another recipe)."""
    (here / "self.args").write_text(BASE + "@self.args\n")
    assert "@self.args: the recipe includes itself" in flag_error(trainer, capsys, ["@self.args"])
    (here / "a.args").write_text(BASE + "@b.args\n")
    (here / "b.args").write_text("@./a.args\n")
    assert "@./a.args: the recipe includes itself" in flag_error(trainer, capsys, ["@a.args"])


def test_recipes_include_recipes_and_later_flags_win(trainer, here):
    (here / "base.args").write_text(BASE + "--learning_rate 1e-3 --output_dir runs/base\n")
    (here / "child.args").write_text("@base.args\n--learning_rate 2e-3\n")
    args = trainer.parse_args(["@child.args", "--output_dir", "runs/cli"])
    assert (args.train_data_dir, args.learning_rate, args.output_dir) == ("data", 2e-3, "runs/cli")


@pytest.mark.parametrize("encoding", ["bom", "crlf", "bom+crlf"])
def test_a_byte_order_mark_and_crlf_line_ends_read_as_plain_text(trainer, here, encoding):
    """Before: a recipe saved with a byte-order mark (Windows Notepad) failed with 'one of the arguments
    --vqvae_model_name_or_path --lossless_latent is required': its first flag had become '\\ufeff--lossless_latent'."""
    text = BASE + "--learning_rate 3e-3  # a comment\n"
    data = text.replace("\n", "\r\n") if "crlf" in encoding else text
    (here / "r.args").write_bytes((b"\xef\xbb\xbf" if "bom" in encoding else b"") + data.encode())
    args = trainer.parse_args(["@r.args"])
    assert (args.lossless_latent, args.train_data_dir, args.learning_rate) == (True, "data", 3e-3)


def test_a_hash_inside_a_word_is_not_a_comment(trainer, here):
    """As in a shell, `#` starts a comment only at the start of a word outside quotes. Before: `--output_dir
    runs/x4#2` silently became `runs/x4` (another run's folder, which `--resume_from_checkpoint latest` resumes)
    and the rest of the line was dropped."""
    (here / "r.args").write_text(
        BASE + "--output_dir runs/x4#2 --learning_rate 4e-3 # the rate\n--hub_model_id 'a # b'\n"
    )
    args = trainer.parse_args(["@r.args"])
    assert (args.output_dir, args.learning_rate, args.hub_model_id) == ("runs/x4#2", 4e-3, "a # b")


# --start_sha256


@pytest.fixture
def start(tmp_path):
    """A start pipeline folder and the SHA-256 of its UNet weights, computed here."""
    folder = tmp_path / "start"
    tiny_lossless_pipeline(seed=0).save_pretrained(folder)
    digest = hashlib.sha256((folder / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()).hexdigest()
    return folder, digest


def start_args(folder, sha: str, flag: str = "--pretrained_model_name_or_path") -> list[str]:
    return ["--lossless_latent", "--train_data_dir", "data", flag, str(folder), "--start_sha256", sha]


@pytest.mark.parametrize("flag", ["--pretrained_model_name_or_path", "--unet_init_from"])
def test_the_sha256_in_upper_case_or_padded_names_the_same_start(trainer, start, flag):
    folder, digest = start
    for spelling in (digest.upper(), f" {digest} "):
        args = trainer.parse_args(start_args(folder, spelling, flag))
        assert args.start_sha256 == digest
        trainer.check_start(args)  # accepted


@pytest.mark.parametrize("spelling", ["TRUNCATED", "INNER SPACE", "", "NOT HEX"])
def test_a_malformed_sha256_is_a_flag_error(trainer, start, capsys, spelling):
    """Before: a truncated or spaced SHA-256 was reported as 'the start has changed' (showing two equal 12-digit
    prefixes), and an empty one turned the check off without a word."""
    folder, digest = start
    sha = {"TRUNCATED": digest[:12], "INNER SPACE": f"{digest[:10]} {digest[10:]}", "": "", "NOT HEX": "g" * 64}
    message = flag_error(trainer, capsys, start_args(folder, sha[spelling]))
    assert "--start_sha256: expected a SHA-256 (64 hexadecimal digits)" in message


def test_a_sha256_without_a_start_is_a_flag_error(trainer, capsys, start):
    """Before: ignored, so a recipe whose start flag was dropped trained from scratch with its pin unchecked."""
    message = flag_error(
        trainer, capsys, ["--lossless_latent", "--train_data_dir", "data", "--start_sha256", start[1]]
    )
    assert "--start_sha256 pins a start" in message


def test_a_hub_id_start_cannot_be_pinned(trainer, start):
    args = trainer.parse_args(start_args("someone/model", start[1]))
    with pytest.raises(SystemExit, match="needs a local start with safetensors weights"):
        trainer.check_start(args)


@pytest.mark.parametrize("flag", ["--pretrained_model_name_or_path", "--unet_init_from"])
def test_a_replaced_start_is_refused_before_anything_is_written(trainer, start, tmp_path, flag):
    folder, digest = start
    tiny_lossless_pipeline(seed=1).save_pretrained(folder)  # the start folder replaced by other weights
    args = trainer.parse_args([*start_args(folder, digest, flag), "--output_dir", str(tmp_path / "run")])
    with pytest.raises(SystemExit) as exit:
        trainer.main(args)
    assert f"--start_sha256 names {digest}: the start has changed" in str(exit.value.code)
    assert not (tmp_path / "run").exists()


def test_a_typo_in_a_recipe_names_the_recipe_and_line(trainer, here, capsys):
    """Before: 'unrecognized arguments: --max_train_stepz 3', which of the recipes (or the command line) unsaid."""
    (here / "base.args").write_text(BASE + "# a comment\n--seed 1 --max_train_stepz 3\n")
    (here / "child.args").write_text("@base.args\n")
    message = flag_error(trainer, capsys, ["@child.args", "--bogus"])
    assert message.endswith(
        "error: unrecognized arguments: --max_train_stepz 3 --bogus (--max_train_stepz: @base.args, line 3)"
    )
