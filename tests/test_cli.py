"""The ``dnorm`` command: the real-model report, ``inspect`` on user files, ``bench``, and bad input."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dnorm import normalize
from dnorm._cli.text import Progress
from dnorm.cli import main
from dnorm.data import load_example_scores
from dnorm.diagnostics import report

RNG = np.random.default_rng(5)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_default_json_has_every_layer_and_the_numpy_backend(capsys):
    status, out, _ = _run(capsys, "--json", "--threshold", "0.2", "--alpha", "0.25")
    assert status == 0
    summary = json.loads(out)
    layers = summary["layers"]
    assert (layers["threshold"], layers["alpha"]) == (0.2, 0.25)
    assert [row["layer"] for row in layers["layers"]] == [1, 2, 3, 4, 5, 6]
    for row in layers["layers"]:
        assert row["doubly"]["share"] == 0.0
        assert row["doubly"]["least_mass"] >= row["doubly"]["bound"] == pytest.approx(1 / 29)
        assert row["hybrid"]["bound"] == pytest.approx(0.25 / 29)
        assert row["softmax"]["bound"] == 0.0
    assert max(row["softmax"]["share"] for row in layers["layers"]) > 0
    backends = summary["backends"]
    assert backends["results"][0]["backend"] == "numpy"
    for row in backends["results"]:
        assert row["softmax"]["least_mass"] < 1e-3 < backends["bound"] < row["doubly"]["least_mass"]
        assert row["max_abs_diff_vs_numpy"] < 1e-5
    assert set(backends["skipped"]).isdisjoint(row["backend"] for row in backends["results"])


def test_python_m_dnorm_prints_the_layer_and_backend_tables():
    done = subprocess.run([sys.executable, "-m", "dnorm"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    out = done.stdout
    assert "all-MiniLM-L6-v2" in out
    assert "mean over sentences and heads" in out
    lines = out.splitlines()
    layer_rows = [line for line in lines if line.split()[:1] in ([str(n)] for n in range(1, 7))]
    assert len(layer_rows) == 6
    assert any(line.startswith("bound") for line in lines)
    assert "One head on every backend" in out
    assert any(line.startswith("numpy ") for line in lines)


@pytest.fixture
def scores_file(tmp_path: Path) -> Path:
    path = tmp_path / "scores.npy"
    np.save(path, load_example_scores().scores[:2, 0])
    return path


def test_inspect_npy_with_a_mask_file_matches_report(capsys, scores_file, tmp_path):
    ex = load_example_scores()
    np.save(tmp_path / "mask.npy", ex.mask[:2, 0])
    status, out, _ = _run(capsys, "inspect", str(scores_file), "--mask-file", str(tmp_path / "mask.npy"), "--json")
    assert status == 0
    summary = json.loads(out)
    assert summary["shape"] == [2, 12, 29, 29]
    expected = report(ex.scores[:2, 0], mask=ex.mask[:2, 0])
    for name, got in summary["schemes"].items():
        assert got["share_mean"] == pytest.approx(float(np.mean(expected.schemes[name].share)))
        assert got["least_mass"] == pytest.approx(float(np.min(expected.schemes[name].least_mass)))
        assert got["bound"] == pytest.approx(float(np.min(expected.schemes[name].bound)))


def test_inspect_prints_one_row_per_scheme(capsys, scores_file):
    status, out, _ = _run(capsys, "inspect", str(scores_file), "--alpha", "0.3")
    assert status == 0
    assert "24 elements of 29 queries x 29 keys" in out
    rows = [line.split()[0] for line in out.splitlines()[-6:]]
    assert rows == ["softmax", "doubly", "hybrid", "sinkhorn", "sigmoid", "stick-breaking"]
    assert "hybrid (alpha=0.3)" in out


def test_inspect_npz_takes_the_first_array_or_the_key(capsys, tmp_path):
    first, second = RNG.normal(size=(3, 4, 5)), RNG.normal(size=(6, 6)) * 10
    np.savez(tmp_path / "both.npz", first=first, second=second)
    _, out, _ = _run(capsys, "inspect", str(tmp_path / "both.npz"), "--json")
    assert json.loads(out)["shape"] == [3, 4, 5]
    _, out, _ = _run(capsys, "inspect", str(tmp_path / "both.npz"), "--key", "second", "--json")
    expected = report(second).schemes["softmax"].least_mass
    assert json.loads(out)["schemes"]["softmax"]["least_mass"] == pytest.approx(float(expected))


def test_inspect_pt_weights(capsys, tmp_path):
    torch = pytest.importorskip("torch")
    weights = normalize(RNG.normal(size=(2, 5, 4)) * 4, "softmax")
    torch.save(torch.from_numpy(weights), tmp_path / "w.pt")
    torch.save({"step": torch.tensor(3), "attn": torch.from_numpy(weights)}, tmp_path / "d.pt")
    _, out, _ = _run(capsys, "inspect", str(tmp_path / "w.pt"), "--kind", "weights", "--json")
    summary = json.loads(out)
    assert list(summary["schemes"]) == ["weights"]
    assert summary["schemes"]["weights"]["bound"] is None
    assert summary["schemes"]["weights"]["least_mass"] == pytest.approx(weights.sum(axis=-2).min())
    status, out, _ = _run(capsys, "inspect", str(tmp_path / "d.pt"), "--key", "attn", "--kind", "weights")
    assert status == 0
    assert "n/a" in out.splitlines()[-1]


def test_inspect_plot_writes_a_png(capsys, scores_file, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "heads.png"
    status, out, _ = _run(capsys, "inspect", str(scores_file), "--head", "3", "--plot", str(png))
    assert status == 0
    assert out.rstrip().endswith(f"wrote {png}")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 20_000


def _write_bad_files(tmp_path: Path) -> dict[str, list[str]]:
    """Argument lists of ``inspect`` that must fail with exit status 2."""
    np.save(tmp_path / "ints.npy", np.ones((3, 3), dtype=np.int64))
    np.save(tmp_path / "complex.npy", np.ones((3, 3), dtype=np.complex128))
    np.save(tmp_path / "nan.npy", np.full((3, 3), np.nan))
    np.save(tmp_path / "vector.npy", np.ones(3))
    np.save(tmp_path / "empty.npy", np.ones((3, 0)))
    np.save(tmp_path / "good.npy", np.ones((3, 3)))
    np.save(tmp_path / "wide_mask.npy", np.ones((4, 3), dtype=bool))
    np.savez(tmp_path / "one.npz", scores=np.ones((3, 3)))
    np.savez(tmp_path / "none.npz")
    (tmp_path / "garbage.npy").write_bytes(b"not an array")
    (tmp_path / "garbage.npz").write_bytes(b"not a zip")
    (tmp_path / "scores.txt").write_text("1 2\n3 4\n")
    good = str(tmp_path / "good.npy")
    return {
        "missing": [str(tmp_path / "nowhere.npy")],
        "unreadable npy": [str(tmp_path / "garbage.npy")],
        "unreadable npz": [str(tmp_path / "garbage.npz")],
        "unknown suffix": [str(tmp_path / "scores.txt")],
        "integer": [str(tmp_path / "ints.npy")],
        "complex": [str(tmp_path / "complex.npy")],
        "NaN only": [str(tmp_path / "nan.npy")],
        "one dimension": [str(tmp_path / "vector.npy")],
        "no keys": [str(tmp_path / "empty.npy")],
        "missing key": [str(tmp_path / "one.npz"), "--key", "weights"],
        "empty npz": [str(tmp_path / "none.npz")],
        "key of npy": [good, "--key", "scores"],
        "mask too big": [good, "--mask-file", str(tmp_path / "wide_mask.npy")],
        "integer mask": [good, "--mask-file", str(tmp_path / "ints.npy")],
        "missing mask": [good, "--mask-file", str(tmp_path / "nowhere.npy")],
        "head out of range": [good, "--head", "1"],
        "plot format": [good, "--plot", str(tmp_path / "plot.xyz")],
    }


BAD_CASES = (
    "missing",
    "unreadable npy",
    "unreadable npz",
    "unknown suffix",
    "integer",
    "complex",
    "NaN only",
    "one dimension",
    "no keys",
    "missing key",
    "empty npz",
    "key of npy",
    "mask too big",
    "integer mask",
    "missing mask",
    "head out of range",
    "plot format",
)


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_file_is_one_error_line_and_status_2(capsys, tmp_path, case):
    status, out, err = _run(capsys, "inspect", *_write_bad_files(tmp_path)[case])
    assert status == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("dnorm: error: ")


def test_bad_pt_files_are_one_error_line(capsys, tmp_path):
    torch = pytest.importorskip("torch")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a torch file")
    for name in ("list.pt", "garbage.pt"):
        status, _, err = _run(capsys, "inspect", str(tmp_path / name))
        assert status == 2
        assert len(err.strip().splitlines()) == 1


def test_bench_prints_medians_and_a_plain_line_per_step_off_a_terminal(capsys):
    status, out, err = _run(capsys, "bench", "--size", "8", "--repeat", "1", "--heads", "1", "--dim", "4")
    assert status == 0
    assert [line.split()[0] for line in out.splitlines()[5:9]] == ["softmax", "doubly", "hybrid", "sinkhorn"]
    assert "numpy" in out.splitlines()[3]
    assert "\r" not in err  # captured output is no terminal: no bar redrawn in place
    steps = err.splitlines()
    total = int(steps[0].split()[0].split("/")[1])
    assert [line.split()[0] for line in steps] == [f"{i}/{total}" for i in range(1, total + 1)]
    assert steps[0].split()[1:] == ["numpy", "softmax"]


def test_progress_bar_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    progress = Progress(2, stream)
    progress.advance("numpy softmax")
    progress.advance("numpy doubly")
    progress.close()
    assert stream.getvalue().count("\r") == 2
    assert "[" + "#" * 30 + "] 2/2 numpy doubly" in stream.getvalue()
    assert stream.getvalue().endswith("\n")


def test_bench_json(capsys):
    _, out, _ = _run(capsys, "bench", "--size", "8", "--repeat", "2", "--heads", "1", "--dim", "4", "--json")
    summary = json.loads(out)
    assert summary["size"] == 8
    assert all(ms > 0 for ms in summary["median_ms"]["numpy"].values())


@pytest.mark.parametrize("argv", [["--alpha", "2"], ["--threshold", "-1"], ["bench", "--size", "0"]])
def test_bad_options_exit_with_status_2(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "error" in capsys.readouterr().err
