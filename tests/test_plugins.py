"""Methods from outside the package (--method-file, entry points) through run-benchmark, and every bad plug-in."""

from __future__ import annotations

import json
import re
import shlex
import types
from importlib import metadata
from pathlib import Path

import pytest
from click.testing import CliRunner

from benchmarks import methods
from benchmarks.engine import plugins
from benchmarks.methods import alpha_vae, copy_x0, interface
from benchmarks.cli import run_benchmark
from ibutil.errors import UserError
from tests.conftest import write_tiny_dataset

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "external-method"
BLUR = EXAMPLE / "my_method.py"  # blur-blend, trains nothing
MEAN = EXAMPLE / "example_method" / "mean_blend.py"  # mean-blend, trains (also the entry point's module)
DOC = ROOT / "docs" / "your-method.md"


def invoke(*args) -> object:
    return CliRunner().invoke(run_benchmark, [str(a) for a in args])


def records(out: Path) -> list[dict]:
    return json.loads((out / "results.json").read_text())["records"]


@pytest.fixture
def tiny_data(tmp_path):
    path = tmp_path / "tiny.h5"
    write_tiny_dataset(path, n_frames=8, size=8)
    return path


def test_every_builtin_passes_the_interface_check():
    """The one interface check accepts every built-in, and those that train nothing predict the dummy batch."""
    for name, module in methods.REGISTRY.items():
        plugins.check_interface(module, name)
        if not module.TRAINS and methods.hooks(module).available() is None:
            plugins.check_predict(module, module.Config(), "cpu", name)


def test_the_interface_is_written_once_in_the_method_protocol(tmp_path):
    """check_interface takes its names and call shapes from interface.Method, and hooks() gives every optional hook
    its default (interface.Hooks) or the module's own."""
    assert interface.REQUIRED == ("NAME", "Config", "TRAINS", "SEEDED", "label", "train", "load", "predict")
    assert all(isinstance(module, interface.Method) for module in methods.REGISTRY.values())
    config = copy_x0.Config()
    plain = methods.hooks(copy_x0)  # copy-x0 exports no hook: every default
    assert plain == interface.Hooks() and not plain.grouped
    assert (plain.variants(config), plain.record(config), plain.available(), plain.overrides("quick")) == \
        ([config], {}, None, {})
    vae = methods.hooks(alpha_vae)
    assert vae.grouped and vae.group_key is alpha_vae.group_key and vae.SHARED["alphas"] == "--alpha"
    assert vae.overrides("quick") == alpha_vae.QUICK and vae.overrides("full") == {}
    bad = {  # a text of the example file -> what check_interface says of it
        GOOD.replace("def train(config: Config, spec, out_dir, *,", "def train(config: Config, spec, *,"):
            "train must take (config, spec, out_dir, *, device, progress)",
        GOOD.replace("def label(config: Config)", "def label(config: Config, extra)"): "label must take (config)",
        GOOD + "\nvariants = 3\n": "variants must be a function",
        GOOD + "\n\ndef group_key(config):\n    return 0\n": "group_key and train_group come together",
        GOOD + "\nQUICK = {'width': 1}\n": "QUICK must be a dict of Config fields (sigma)",
    }
    for i, (text, message) in enumerate(bad.items()):
        assert text != GOOD, message
        (tmp_path / f"bad{i}.py").write_text(text)
        with pytest.raises(UserError, match=re.escape(message)):
            plugins.load_file(tmp_path / f"bad{i}.py")


def test_method_file_runs_with_its_config_option(tmp_path, tiny_data):
    """At sigma 0 blur-blend is the pixel blend: its every record equals pixel-average's (the option arrived)."""
    out = tmp_path / "out"
    r = invoke("--quick", "--data", tiny_data, "--method-file", BLUR, "--methods", "blur-blend", "pixel-average",
               "--blur-blend-sigma", "0", "--out", out, "--cache", tmp_path / "cache", "--quiet")
    assert r.exit_code == 0, r.output
    rows = records(out)
    key = ("split", "gap", "tau", "well_posed")
    blur = {tuple(x[k] for k in key): x["mse"] for x in rows if x["method"] == "blur-blend"}
    flat = {tuple(x[k] for k in key): x["mse"] for x in rows if x["method"] == "pixel-average"}
    assert blur and blur.keys() == flat.keys()
    assert all(blur[k] == pytest.approx(flat[k], rel=1e-6, abs=1e-9) for k in blur)
    config = json.loads((out / "config.json").read_text())
    assert config["method_configs"]["blur-blend"] == {"sigma": 0.0}
    assert config["plugins"]["blur-blend"].startswith(f"method file {BLUR}, sha256 ")
    assert "blur-blend" not in methods.PLUGINS  # registered for that run only
    summary = [line for line in r.output.splitlines() if line.startswith("dof ")]
    assert summary and all("blur-blend " in line and "(rank " in line for line in summary), r.output  # the user's row


def test_method_file_runs_beside_the_builtins_unless_methods_chooses(tmp_path):
    r = invoke("--quick", "--dof", "1", "--method-file", BLUR, "--plan", "--cache", tmp_path)
    evals = [json.loads(line) for line in r.output.splitlines() if '"kind": "eval"' in line]
    assert r.exit_code == 0 and evals, r.output
    r = invoke("--quick", "--dof", "1", "--method-file", BLUR, "--blur-blend-sigma", "2", "--help")
    assert r.exit_code == 0 and "--blur-blend-sigma" in r.output and "Gaussian standard deviation" in r.output
    assert "--blur-blend-sigma" not in invoke("--help").output


def plan_hashes(*args) -> dict[str, str]:
    r = invoke("--quick", "--dof", "1", "--plan", *args)
    assert r.exit_code == 0, r.output
    return {j["id"]: j["hash"] for j in map(json.loads, r.output.splitlines())}


def test_an_edited_method_file_gets_new_job_hashes(tmp_path):
    """The file's content hash is in its jobs' hashes: an edit retrains and rescores; the built-ins keep theirs."""
    trained = tmp_path / "mean_blend.py"
    trained.write_text(MEAN.read_text())
    before = plan_hashes("--method-file", trained, "--methods", "mean-blend", "pixel-average", "--cache", tmp_path)
    trained.write_text(MEAN.read_text() + "\n# an edit\n")
    after = plan_hashes("--method-file", trained, "--methods", "mean-blend", "pixel-average", "--cache", tmp_path)
    train = [j for j in before if j.startswith("train-mean-blend")]
    assert train and all(before[j] != after[j] for j in (*train, "eval-dof1"))
    assert before["render-dof1"] == after["render-dof1"]
    builtin = plan_hashes("--methods", "pixel-average", "--cache", tmp_path)
    assert builtin["eval-dof1"] != before["eval-dof1"]


GOOD = BLUR.read_text()
RETURN = "    return out.clamp(0, 1)\n"
BAD = {  # name -> (the file's text, what its one line says)
    "missing-export": (GOOD.replace("def load(", "def _load("), "does not export load"),
    "builtin-name": (GOOD.replace('NAME = "blur-blend"', 'NAME = "pixel-average"'),
                     "NAME 'pixel-average' is the built-in method pixel-average"),
    "bad-name": (GOOD.replace('NAME = "blur-blend"', 'NAME = "Blur Blend"'), "NAME must be lower-case words"),
    "not-frozen": (GOOD.replace("@dataclass(frozen=True)", "@dataclass"), "Config must be a frozen dataclass"),
    "predict-signature": (GOOD.replace("def predict(model: Config, x0", "def predict(x0"),
                          "predict must take (model, x0, x2, tau)"),
    "syntax": (GOOD + "\ndef broken(:\n", "importing it failed: SyntaxError"),
    "shape": (GOOD.replace(RETURN, "    return out[..., 1:]\n"), "predict returned shape (2, 3, 16, 15)"),
    "range": (GOOD.replace(RETURN, "    return out * 3\n"), "predict returned values in ["),
    "device": (GOOD.replace(RETURN, "    return out.to('meta')\n"), "returned a tensor on meta for inputs on cpu"),
    "nan": (GOOD.replace(RETURN, "    return out * float('nan')\n"), "predict returned NaN or infinite values"),
    "dtype": (GOOD.replace(RETURN, "    return (out * 255).to(torch.uint8)\n"), "predict returned dtype torch.uint8"),
    "numpy": (GOOD.replace(RETURN, "    return out.numpy()\n"), "predict returned a ndarray, not a torch.Tensor"),
    "predict-raises": (GOOD.replace(RETURN, "    return out[7]\n"), "predict failed on a (2, 3, 16, 16) batch: IndexError"),
    "config-refuses": (GOOD.replace("sigma: float = 1.0", "sigma: float = -1.0"),
                       "Config() with its defaults, or label() of its variants, failed: ValueError: --blur-blend-sigma must"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_method_file_exits_2_with_one_line_and_leaves_nothing(case, tmp_path, tiny_data):
    assert BAD[case][0] != GOOD
    path = tmp_path / "bad.py"
    path.write_text(BAD[case][0])
    out, cache = tmp_path / "out", tmp_path / "cache"
    r = invoke("--quick", "--data", tiny_data, "--method-file", path, "--methods", "blur-blend", "pixel-average",
               "--out", out, "--cache", cache, "--quiet")
    assert r.exit_code == 2, r.output
    assert r.output.startswith(f"error: method file {path}: ") and BAD[case][1] in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert not out.exists() and not list(tmp_path.glob(".out*")) and not cache.exists()


def test_config_refusing_an_option_value_exits_2(tmp_path, tiny_data):
    r = invoke("--quick", "--data", tiny_data, "--method-file", BLUR, "--blur-blend-sigma", "-2", "--out",
               tmp_path / "out", "--cache", tmp_path / "cache")
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert "its Config refused the settings: ValueError: --blur-blend-sigma must be a finite number >= 0" in r.output
    r = invoke("--method-file", tmp_path / "absent.py", "--plan")
    assert r.exit_code == 2 and r.output.strip() == f"error: method file {tmp_path / 'absent.py'}: no such file"
    r = invoke("--methods", "no-such-method", "--plan")
    assert r.exit_code == 2 and "--method-file PATH.py" in r.output and len(r.output.strip().splitlines()) == 1


def test_two_files_with_one_name_exit_2(tmp_path):
    other = tmp_path / "other.py"
    other.write_text(GOOD.replace("0: the plain pixel blend", "zero: the plain blend"))
    r = invoke("--method-file", BLUR, other, "--plan")
    assert r.exit_code == 2 and f"method file {other}: NAME 'blur-blend' is also the NAME of method file" in r.output


def test_a_trained_plugin_with_nan_output_fails_at_scoring_and_caches_no_evaluation(tmp_path, tiny_data):
    """A plug-in that trains cannot predict before the run; its first real batch is checked instead."""
    path = tmp_path / "nan_blend.py"
    path.write_text(MEAN.read_text().replace("    return (1 - weight) * blend", "    return float('nan') * blend"))
    out, cache = tmp_path / "out", tmp_path / "cache"
    r = invoke("--quick", "--data", tiny_data, "--method-file", path, "--methods", "mean-blend", "--out", out,
               "--cache", cache, "--quiet")
    assert r.exit_code == 2, r.output
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert errors == [f"error: method file {path}: predict returned NaN or infinite values; it must return "
                      "(B, 3, H, W) floats in [0, 1] on x0's device"], r.output
    assert "Traceback" not in r.output and not out.exists() and not list(cache.glob("evals/*"))


def test_bad_entry_points_exit_2(tmp_path, monkeypatch):
    """Entry points go through the same check (a fake entry point here, so no install is needed)."""
    (tmp_path / "pkg_blur.py").write_text(GOOD)
    monkeypatch.syspath_prepend(str(tmp_path))
    fake = {"other-name": metadata.EntryPoint("other-name", "pkg_blur", plugins.ENTRY_POINT_GROUP),
            "broken": metadata.EntryPoint("broken", "no_such_module_here", plugins.ENTRY_POINT_GROUP),
            "copy-x0": metadata.EntryPoint("copy-x0", "pkg_blur", plugins.ENTRY_POINT_GROUP)}
    monkeypatch.setattr(plugins, "entry_points", lambda: fake)
    r = invoke("--methods", "other-name", "--plan")
    assert r.exit_code == 2 and "the module's NAME is 'blur-blend'; name the entry point blur-blend" in r.output
    r = invoke("--methods", "broken", "--plan")
    assert r.exit_code == 2 and "importing it failed: ModuleNotFoundError" in r.output
    assert len(r.output.strip().splitlines()) == 1
    r = invoke("--methods", "copy-x0", "--plan")
    assert r.exit_code == 2 and "entry point copy-x0 = pkg_blur: NAME 'copy-x0' is the built-in method" in r.output
    assert invoke("--methods", "pixel-average", "--plan").exit_code == 0  # a name no entry point takes
    clash = types.ModuleType("clash")
    clash.NAME = "pixel-average"
    with pytest.raises(UserError, match="'pixel-average' is the built-in method pixel-average"):
        with methods.registered([methods.Plugin(clash, "method file clash.py", "0", file=True)]):
            pass
    assert not methods.PLUGINS


# ----------------------------------------------------------------------------- the docs' worked example


def installed(name: str) -> bool:
    return name in plugins.entry_points()


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One cache for the runs below, so the quick dof 1 dataset and its pose table are made once."""
    return tmp_path_factory.mktemp("plugin-cache")


def doc_commands() -> list[list[str]]:
    """Every run-benchmark command of docs/your-method.md's code blocks, as argument lists."""
    found = []
    for lang, block in re.findall(r"```(\w*)\n(.*?)```", DOC.read_text(), re.S):
        for line in block.splitlines() if lang in ("", "bash") else ():
            line = line.split("#")[0].strip()
            if line.startswith("run-benchmark "):
                found.append(shlex.split(line)[1:])
    return found


def test_the_docs_worked_example_runs(tmp_path, shared_cache, monkeypatch):
    """Each run-benchmark line of docs/your-method.md, from the repository root, into tmp_path."""
    monkeypatch.chdir(ROOT)
    commands = doc_commands()
    assert len(commands) >= 2 and any("--method-file" in c for c in commands)
    ran = 0
    for args in commands:
        if "--help" in args:
            continue
        if "mean-blend" in args and "--method-file" not in args and not installed("mean-blend"):
            continue  # the entry-point command: test_the_installed_example_package_runs skips with its reason
        out = tmp_path / f"out{ran}"
        args = [*args[:args.index("--out")], *args[args.index("--out") + 2:]] if "--out" in args else args
        r = invoke(*args, "--out", out, "--cache", shared_cache, "--quiet", "--threads", "1")
        assert r.exit_code == 0, (args, r.output)
        chosen = args[args.index("--methods") + 1:]
        chosen = chosen[:next((i for i, a in enumerate(chosen) if a.startswith("-")), len(chosen))]
        assert {x["method"] for x in records(out)} == set(chosen)
        ran += 1
    assert ran >= 1


def test_the_installed_example_package_runs(tmp_path, shared_cache):
    """CI installs examples/external-method (scripts/test.sh); its entry point makes --methods mean-blend work."""
    if not installed("mean-blend"):
        pytest.skip("examples/external-method is not installed: pip install -e examples/external-method --no-deps")
    out = tmp_path / "out"
    r = invoke("--quick", "--dof", "1", "--methods", "mean-blend", "pixel-average", "--mean-blend-weight", "0",
               "--out", out, "--cache", shared_cache, "--quiet", "--threads", "1")
    assert r.exit_code == 0, r.output
    rows = records(out)
    config = json.loads((out / "config.json").read_text())
    assert config["plugins"]["mean-blend"].startswith("entry point mean-blend = example_method.mean_blend")
    # At weight 0 the mean frame has no say: mean-blend's rows are the pixel blend's.
    key = ("split", "gap", "tau", "well_posed")
    mean = {tuple(x[k] for k in key): x["mse"] for x in rows if x["method"] == "mean-blend"}
    flat = {tuple(x[k] for k in key): x["mse"] for x in rows if x["method"] == "pixel-average"}
    assert mean and mean.keys() == flat.keys()
    assert all(mean[k] == pytest.approx(flat[k], rel=1e-5, abs=1e-9) for k in mean)
    assert any(r["train_seconds"] is not None for r in rows if r["method"] == "mean-blend")
