"""``tinycl export`` end to end on a finished run directory: the project written, verified on
the host, Cortex-M4F and RV32 on 256 of the run's own test images (bit-exact codes and packed
bytes, identical predictions), the device measured (static memory matched by name to the cost
model, instructions per kernel from a deterministic QEMU plugin), and every refusal one line
with exit code 2.

Times measured here (2 shared cores, background load): the run fixture ~16 s; a verification
~5 s on the host and ~30 s per QEMU target (256 images of 64 px, ~31 M instructions each)."""

import hashlib
import io
import json
import re
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from tinycl.export import load_deployment, save_deployment
from tinycl.export.deployment import FILE_NAME, HEADER, MAGIC, deployment_state
from tinycl.export.measure import BUFFER_TERMS, TERM_NOTES
from tinycl.export.toolchains import build_plugin, read_counts, run_project

IMAGES = 256  # issue 16: identical predictions on >= 256 test images, on every target


@pytest.fixture(autouse=True)
def same_cache(tiny_run_dir, monkeypatch):
    """The run's cache folder: --verify rebuilds the benchmark's test images like the run did."""
    monkeypatch.setenv("TINYCL_CACHE", str(tiny_run_dir.parent / "cache"))


@pytest.fixture(scope="module")
def verified(tiny_run_dir, tmp_path_factory, tinycl_cli):
    """target -> (exit code, stdout, stderr, project folder); each target verified once."""
    results = {}

    def verify(target: str):
        if target not in results:
            out = tmp_path_factory.mktemp(f"export-{target}")
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv("TINYCL_CACHE", str(tiny_run_dir.parent / "cache"))
                results[target] = (*tinycl_cli("export", tiny_run_dir, "--out", out, "--target", target,
                                               "--verify", "--images", IMAGES), out)
        return results[target]

    return verify


def read_json(path):
    return json.loads(path.read_text())


@pytest.mark.parametrize("target", ["host", "cortex-m4", "rv32"])
def test_verify_is_bit_exact_on_256_test_images(verified, require_toolchain, target):
    require_toolchain(target)
    code, out, err, root = verified(target)
    assert code == 0, err
    verdict = [line for line in out.splitlines() if line.startswith("tinycl export: verify")]
    assert len(verdict) == 1 and f"verify on {target} passed: {IMAGES} test images" in verdict[0]
    result = read_json(root / "verify.json")
    checks = result["checks"]
    assert checks["ok"] and checks["frames"] == IMAGES and result["images"] == IMAGES
    for name in ("lr_u8", "codes", "packed", "predictions", "replay_codes", "replay_predictions", "replay_labels"):
        assert checks[f"{name}_identical"], name
    assert checks["logits_max_rel_error"] <= 1e-5 and checks["replay_rows"] == 60
    assert result["mismatched_rows"] == {k: 0 for k in result["mismatched_rows"]}
    assert "test images of synthetic-core50" in result["images_source"]
    assert (root / "tinycl_model.c").is_file() and (root / f"Makefile.{target}").is_file()


@pytest.mark.parametrize("target", ["cortex-m4", "rv32"])
def test_instructions_per_layer_and_kernel(verified, require_toolchain, target):
    require_toolchain(target)
    code, out, err, root = verified(target)
    assert code == 0, err
    counts = read_json(root / "export_report.json")["instructions"]
    assert counts["frames"] == IMAGES and counts["macs_mismatch_regions"] == []  # generator MACs = cost model's
    kernels = {k["kernel"]: k for k in counts["kernels"]}
    assert {"conv2d_s8", "depthwise_conv2d_u8", "pointwise_conv2d_u8", "pointwise_fp32_fw", "depthwise_fp32_fw",
            "linear_fp32_fw", "pack_bits", "latent_shift_u8"} <= set(kernels)
    for name in ("conv2d_s8", "depthwise_conv2d_u8", "pointwise_conv2d_u8", "pointwise_fp32_fw", "linear_fp32_fw"):
        assert 2 < kernels[name]["instructions_per_mac"] < 40, (name, kernels[name]["instructions_per_mac"])
    # layers 0..19 frozen, 20..28 adaptive (MobileNetV1: ... 26 pw, 27 pool, 28 linear)
    assert [row["layer"] for row in counts["layers"]] == list(range(29))
    per_frame = counts["per_frame"]
    assert per_frame["frozen_macs"] == sum(r["macs"] for r in counts["layers"] if r["layer"] <= 19)
    # the whole program: the frames' regions and the replay rows' account for almost every instruction
    accounted = IMAGES * per_frame["instructions"] + 60 * counts["replay"]["instructions_per_row"]
    assert 0.99 < accounted / counts["total"] <= 1
    assert "instr/MAC" in out and "pointwise_conv2d_u8" in out


@pytest.mark.parametrize("target", ["cortex-m4", "rv32"])
def test_instruction_counts_are_deterministic(verified, require_toolchain, target):
    """Two runs of the same binary on the same frames: the same count at every mark."""
    require_toolchain(target)
    code, _, err, root = verified(target)
    assert code == 0, err
    build_plugin(root)
    frames = np.random.default_rng(5).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    runs = []
    for _ in range(2):
        run_project(root, target, frames, count_instructions=True)
        runs.append(read_counts(root, target))
    (total_a, marks_a), (total_b, marks_b) = runs
    assert total_a == total_b and np.array_equal(marks_a, marks_b) and len(marks_a) > 3 * 40


@pytest.mark.parametrize("target", ["host", "cortex-m4"])
def test_memory_report_matches_buffers_by_name(verified, require_toolchain, target):
    require_toolchain(target)
    code, out, err, root = verified(target)
    assert code == 0, err
    memory = read_json(root / "export_report.json")["memory"]
    assert memory["all_sizes_match_elf"]
    buffers = {row["name"]: row for row in memory["buffers"]}
    for row in buffers.values():
        if row["name"] != "stack":
            assert row["elf_bytes"] == row["bytes"], row  # the ELF symbol of the same name, same size
    terms = {t["term"]: t for t in memory["terms"]}
    assert set(terms) == set(TERM_NOTES)  # every cost-model term is listed and explained
    assert all(t["note"] for t in terms.values())
    # every exported buffer that has a counterpart sits under its term; the terms with none are training's
    assert {name for name, t in terms.items() if not t["buffers"]} == {
        "adaptive_grads_bytes", "adaptive_momentum_bytes", "scratch_bytes"}
    assert terms["frozen_weights_bytes"]["exported_bytes"] == terms["frozen_weights_bytes"]["cost_model_bytes"]
    replay = terms["replay_bytes"]
    assert replay["exported_bytes"] == replay["cost_model_bytes"] == 60 * 2048  # 128x4x4 latents at 64 px
    assert terms["frozen_requant_bytes"]["exported_bytes"] * 9 == terms["frozen_requant_bytes"]["cost_model_bytes"] * 12
    assert {"tinycl_frozen_act0", "tinycl_adaptive_act0", "lr_u8"} <= set(terms["activation_bytes"]["buffers"])
    known = [pattern for pattern, _, _ in BUFFER_TERMS]
    assert all(any(re.fullmatch(p, name) for p in known) for name in buffers)  # each buffer classified by name
    if target == "cortex-m4":
        assert buffers["tinycl_frozen0_weight"]["memory"] == "flash" and buffers["frame"]["memory"] == "ram"
        assert memory["sections"]["bss"] == memory["totals"]["exported_ram_bytes"]  # buffers + stack = .bss
    assert "frozen_weights_bytes" in out


def test_export_without_verify_writes_project_and_report(tiny_run_dir, tmp_path, tinycl_cli):
    code, out, err = tinycl_cli("export", tiny_run_dir, "--out", tmp_path / "p", "--target", "rv32")
    assert code == 0, err
    assert (tmp_path / "p" / "Makefile.rv32").is_file() and not (tmp_path / "p" / "verify.json").exists()
    report = read_json(tmp_path / "p" / "export_report.json")
    assert "instructions" not in report and report["memory"]["terms"]
    assert "count" in (tmp_path / "p" / "Makefile.rv32").read_text()  # make -f Makefile.rv32 count


# ---------------------------------------------------------------- refusals: one line, exit 2


def one_line_error(code, out, err, *fragments):
    """``cli``'s (code, stdout, stderr): exit 2 and one ``tinycl: error:`` line holding every fragment."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tinycl: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def payload_file(path, state) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    path.write_bytes(HEADER.pack(MAGIC, 1, len(payload), hashlib.sha256(payload).digest()) + payload)


def test_missing_run_dir(tmp_path, tinycl_cli):
    one_line_error(*tinycl_cli("export", tmp_path / "nope"), "does not exist")


def test_run_dir_that_is_not_deployable_says_why(tmp_path, tinycl_cli):
    (tmp_path / "summary.json").write_text(json.dumps({
        "deployable": False,
        "not_deployable_because": "the device half runs the INT8 frozen stage with Q-bit latents (--bits 1..8)"}))
    one_line_error(*tinycl_cli("export", tmp_path), "not deployable", "--bits 1..8")


def test_folder_that_is_no_run(tmp_path, tinycl_cli):
    one_line_error(*tinycl_cli("export", tmp_path), "no deployment.tcd and no summary.json")


def test_damaged_deployment(tiny_run_dir, tmp_path, tinycl_cli):
    shutil.copy(tiny_run_dir / "summary.json", tmp_path)
    data = (tiny_run_dir / FILE_NAME).read_bytes()
    (tmp_path / FILE_NAME).write_bytes(data[:-100])
    one_line_error(*tinycl_cli("export", tmp_path), "is truncated")
    (tmp_path / FILE_NAME).write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    one_line_error(*tinycl_cli("export", tmp_path), "checksum does not match")


def test_unknown_target(tiny_run_dir, tmp_path, tinycl_cli):
    one_line_error(*tinycl_cli("export", tiny_run_dir, "--out", tmp_path / "p", "--target", "esp32"),
                   "unknown export target 'esp32'", "host, cortex-m4, rv32")
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("part", ["adaptive", "frozen"])
def test_layer_the_runtime_lacks(tiny_run_dir, tmp_path, part, tinycl_cli):
    state = deployment_state(load_deployment(tiny_run_dir / FILE_NAME))
    if part == "adaptive":
        state["adaptive"][1]["op"] = "gelu"
        message = "unknown adaptive op 'gelu'"
    else:
        state["frozen"]["layers"][3]["kind"] = "maxpool"
        message = "kind 'maxpool' has no kernel in the C runtime"
    payload_file(tmp_path / FILE_NAME, state)
    one_line_error(*tinycl_cli("export", tmp_path, "--out", tmp_path / "p"), message)
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("target, change, memory", [
    ("cortex-m4", "camera", "RAM"), ("rv32", "camera", "RAM"), ("cortex-m4", "replays", "FLASH")])
def test_buffers_exceeding_the_target_memory_say_by_how_much(tiny_run_dir, tmp_path, target, change, memory,
                                                             tinycl_cli):
    """A 1200 x 1200 camera needs ~8.6 MB of activation buffers, more than either board's RAM;
    3000 replay rows of 2048 bytes, more than the Cortex-M4F board's 4 MiB of flash."""
    dep = load_deployment(tiny_run_dir / FILE_NAME)
    if change == "camera":
        dep = replace(dep, input_shape=(3, 1200, 1200), replay_rows=None, replay_labels=None)
    else:
        dep = replace(dep, replay_rows=np.zeros((3000, 2048), np.uint8), replay_labels=np.zeros(3000, np.int64))
    save_deployment(tmp_path / FILE_NAME, dep)
    line = one_line_error(*tinycl_cli("export", tmp_path, "--out", tmp_path / "p", "--target", target),
                          "does not fit", f"bytes of {memory}", "bytes more than the", "largest: ")
    assert not (tmp_path / "p").exists()
    assert int(line.split(f"bytes of {memory}, ")[1].split(" bytes more")[0].replace(",", "")) > 100_000


def test_missing_toolchain_names_the_install_script(tiny_run_dir, tmp_path, monkeypatch, tinycl_cli):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    one_line_error(*tinycl_cli("export", tiny_run_dir, "--out", tmp_path / "p", "--target", "cortex-m4",
                               "--verify"), "arm-none-eabi-gcc", "qemu-system-arm", "scripts/install_toolchains.sh")
    assert not (tmp_path / "p").exists()


def test_bad_image_count(tiny_run_dir, tmp_path, tinycl_cli):
    one_line_error(*tinycl_cli("export", tiny_run_dir, "--out", tmp_path / "p", "--verify", "--images", 0),
                   "--images")


def test_a_difference_fails_the_verdict_with_exit_1(tiny_run_dir, tmp_path, monkeypatch, require_toolchain,
                                                    tinycl_cli):
    """Python's side altered on one image's codes and another's prediction: FAILED, counted, exit 1."""
    require_toolchain("host")
    import tinycl.export.driver as driver

    real = driver.reference_outputs

    def altered(dep, frames):
        want = real(dep, frames)
        want.codes[2, 0] ^= 1
        want.predictions[5] = (want.predictions[5] + 1) % dep.num_classes
        return want

    monkeypatch.setattr(driver, "reference_outputs", altered)
    code, out, err = tinycl_cli("export", tiny_run_dir, "--out", tmp_path / "p", "--verify", "--images", 16)
    assert code == 1, err
    verdict = [line for line in out.splitlines() if line.startswith("tinycl export: verify")][0]
    assert "verify on host FAILED: 16 test images" in verdict
    assert "differ in 0 / 1 / 0 of 16 images" in verdict and "predictions differ on 1 of 16 images" in verdict
    result = read_json(tmp_path / "p" / "verify.json")
    assert not result["checks"]["ok"] and result["mismatched_rows"]["codes"] == 1
