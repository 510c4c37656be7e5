"""The exercise checker, and every exercise of the notebooks run with an unfinished stub, a wrong
answer and the reference."""

import contextlib
import io
import os
import re
from pathlib import Path

import jupytext
import matplotlib.pyplot as plt
import pytest
import torch

from labkit.utils.exercise import NOT_IMPLEMENTED, Case, check_exercise


def reference(x):
    return x.cumsum(0)


def make_inputs(seed):
    torch.manual_seed(seed)
    return (torch.randn(6),)


def test_reference_passes(capsys):
    assert check_exercise(reference, reference, make_inputs)
    assert "✓" in capsys.readouterr().out


def test_wrong_candidate_reports_first_mismatch(capsys):
    def off_by_one(x):
        out = x.cumsum(0)
        out[3] += 1.0
        return out

    assert not check_exercise(off_by_one, reference, make_inputs)
    assert "output[3]" in capsys.readouterr().out


def test_wrong_shape_and_exceptions_are_reported(capsys):
    assert not check_exercise(lambda x: x[:2], reference, make_inputs)
    assert "expected shape (6,)" in capsys.readouterr().out
    assert not check_exercise(lambda x: 1 / 0, reference, make_inputs)
    assert "ZeroDivisionError" in capsys.readouterr().out


def test_an_unfinished_stub_is_not_implemented_yet_not_a_crash(capsys):
    def stub(x): ...

    def raises(x):
        raise NotImplementedError

    for unfinished in (stub, raises):
        assert not check_exercise(unfinished, reference, make_inputs, expects="f(x [N]) -> [N]")
        out = capsys.readouterr().out
        assert NOT_IMPLEMENTED in out and "expected: f(x [N]) -> [N]" in out


def test_a_none_inside_an_observed_answer_is_reported_not_raised(capsys):
    # The 00 bug: observe() wraps the step's None loss in a dict, and float(None) crashed.
    def observe(args, loss):
        return {"loss": loss, "x": args[0]}

    assert not check_exercise(lambda x: "1.0", lambda x: 1.0, make_inputs, observe=observe)
    assert "expected a number" in capsys.readouterr().out
    assert not check_exercise(lambda x: None, lambda x: 1.0, make_inputs, observe=observe)
    assert NOT_IMPLEMENTED in capsys.readouterr().out


def test_cases_come_first_and_are_named(capsys):
    def wrong_on_empty(x):
        return x.cumsum(0) if len(x) else torch.zeros(1)

    cases = [Case((torch.zeros(0),), "empty input")]
    assert check_exercise(wrong_on_empty, reference, make_inputs)  # random inputs miss it
    capsys.readouterr()
    assert not check_exercise(wrong_on_empty, reference, make_inputs, cases=cases)
    assert "case 'empty input'" in capsys.readouterr().out


def test_calls_repeats_on_the_same_inputs(capsys):
    # A step that forgets to reset its state only differs on the second call.
    def counter(state):
        state["n"] = state.get("n", 0) + 1
        return state["n"]

    def forgets(state):
        state["n"] = state.get("n", 0) + 1
        return 1

    def inputs(_seed):
        return ({},)

    assert check_exercise(forgets, counter, inputs)
    capsys.readouterr()
    assert not check_exercise(forgets, counter, inputs, calls=2)
    assert "output[1]" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# Every exercise in the notebooks, run as a learner would meet it


NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9]*.py"))
# Two ways a notebook ships an exercise: bound to the reference (`my_f = f  # delete this
# line ...`, so Run all shows a pass until the learner deletes the line), or as an unbound stub
# (`def my_f(...): ...`, so Run all shows "not implemented yet" until the learner writes it).
BINDING = re.compile(r"^(my_\w+) = (\w+)  # delete this line.*$", re.MULTILINE)
STUB = re.compile(r"^def (my_\w+)\(", re.MULTILINE)
CHECK_CALL = re.compile(r"^(passed = )?check_exercise\(\s*(my_\w+),\s*(\w+),", re.MULTILINE)


def _nms_at_or_above(boxes, scores, iou_threshold):
    """NMS that suppresses at IoU >= threshold instead of > threshold."""
    from labkit.detection.boxes import box_iou

    order = torch.sort(scores, descending=True, stable=True).indices
    keep = []
    for i in order.tolist():
        if all(box_iou(boxes[i : i + 1], boxes[j : j + 1]).item() < iou_threshold for j in keep):
            keep.append(i)
    return torch.tensor(keep, dtype=torch.int64)


def _iou_without_clamp(boxes1, boxes2):
    lt = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    inter = (rb - lt).prod(-1)  # negative widths times negative heights: positive "overlap"
    area1 = (boxes1[:, 2:] - boxes1[:, :2]).prod(-1)
    area2 = (boxes2[:, 2:] - boxes2[:, :2]).prod(-1)
    return inter / (area1[:, None] + area2[None, :] - inter)


def _returns_ignoring_dones(rewards, gamma, dones):
    out, running = torch.zeros_like(rewards), 0.0
    for t in reversed(range(len(rewards))):
        running = rewards[t] + gamma * running
        out[t] = running
    return out


def _td_ignoring_terminal(rewards, next_q_target, terminated, gamma):
    return rewards + gamma * next_q_target.max(dim=1).values


def _step_without_zero_grad(model, optimizer, batch, loss_fn):
    loss = loss_fn(model, batch)
    loss.backward()
    optimizer.step()
    return loss.item()


def _ddpm_step_with_beta_variance(schedule, x_t, t, x0_hat, noise):
    """σ_t² = β_t instead of the posterior variance β̃_t the exercise asks for."""
    from labkit.diffusion.sampling import ddpm_step

    return ddpm_step(schedule, x_t, t, x0_hat, noise, variance="beta")


def _ddim_step_wrapping_at_the_end(schedule, x_t, t, t_prev, x0_hat, eps_hat, eta, noise):
    """Eq. 12 with ``alphas_cumprod[t_prev]`` even for t_prev = -1 (the last ᾱ, not 1)."""
    a = schedule.alphas_cumprod
    a_t, a_s = a[t], a[t_prev]
    sigma = eta * ((1 - a_s) / (1 - a_t) * (1 - a_t / a_s)).sqrt()
    x = a_s.sqrt() * x0_hat + (1 - a_s - sigma**2).clamp(min=0).sqrt() * eps_hat
    return x + sigma * noise if eta > 0 else x


def _entropy_nan_on_one_hot(probs):
    return -(probs * probs.log()).sum(-1)  # 0 · log 0 = nan


def _top_k_ties_by_position(scores, pool_ids, k):
    order = torch.argsort(scores, descending=True, stable=True)[:k]  # ties: pool order, not id
    return [pool_ids[i] for i in order.tolist()]


def _covariance_unsquared(scales, rotations):
    return rotations @ torch.diag_embed(scales) @ rotations.transpose(-1, -2)  # R S Rᵀ


def _jacobian_sign_error(points_cam, camera):
    x, y, z = points_cam.unbind(-1)
    zero = torch.zeros_like(z)
    row_u = torch.stack([camera.fx / z, zero, camera.fx * x / z**2], -1)  # + instead of -
    row_v = torch.stack([zero, camera.fy / z, camera.fy * y / z**2], -1)
    return torch.stack([row_u, row_v], -2)


def _ewa_without_the_view_rotation(cov3d, points_cam, camera):
    from labkit.splatting.cameras import projection_jacobian

    J = projection_jacobian(points_cam, camera)
    return J @ cov3d @ J.transpose(-1, -2) + 0.3 * torch.eye(2)  # W left out


def _composite_back_to_front(colors, alphas):
    colors, alphas = colors.flip(0), alphas.flip(0)
    transmittance = torch.cat([alphas.new_ones(1), torch.cumprod(1 - alphas, 0)[:-1]])
    return (colors * (alphas * transmittance)[:, None]).sum(0)


WRONG = {  # one wrong version per exercise, each a mistake a learner could make
    "my_train_step": _step_without_zero_grad,
    "my_box_iou": _iou_without_clamp,
    "my_nms": _nms_at_or_above,
    "my_ddpm_step": _ddpm_step_with_beta_variance,
    "my_ddim_step": _ddim_step_wrapping_at_the_end,
    "my_discounted_returns": _returns_ignoring_dones,
    "my_td_targets": _td_ignoring_terminal,
    "my_entropy": _entropy_nan_on_one_hot,
    "my_top_k": _top_k_ties_by_position,
    "my_covariance": _covariance_unsquared,
    "my_jacobian": _jacobian_sign_error,
    "my_project_covariance": _ewa_without_the_view_rotation,
    "my_composite": _composite_back_to_front,
}


def _magics_commented(source):
    return re.sub(r"^%", "# %", source, flags=re.MULTILINE)  # IPython magics are not Python


def _exercises():
    """(notebook, exercise name, cells before it, exercise cell) for every exercise cell."""
    found = []
    for path in NOTEBOOKS:
        cells = [c.source for c in jupytext.read(path).cells if c.cell_type == "code"]
        for i, cell in enumerate(cells):
            match = CHECK_CALL.search(cell)
            if match and (BINDING.search(cell) or STUB.search(cell)):
                found.append((path.name, match.group(2), i, cell))
    return found


EXERCISES = _exercises()


def test_every_exercise_has_a_wrong_version_here():
    assert len(EXERCISES) >= 13 and sorted(name for _, name, _, _ in EXERCISES) == sorted(WRONG)


def _self_contained(cell, space):
    """Whether the exercise cell runs on ``space`` alone (no NameError)."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(cell, "exercise", "exec"), dict(space))
    except NameError:
        return False
    return True


@pytest.fixture(scope="module")
def namespaces():
    """For each exercise, a namespace to run its cell in, in smoke mode: the notebook's
    parameters and setup cells, or — when the exercise uses more — every code cell before it,
    in order, as "Run all" would."""
    os.environ["LABKIT_SMOKE"] = "1"
    spaces = {}
    try:
        for path in NOTEBOOKS:
            mine = [(name, i, src) for nb, name, i, src in EXERCISES if nb == path.name]
            if not mine:
                continue
            notebook = jupytext.read(path)
            code = [c for c in notebook.cells if c.cell_type == "code"]
            cells = [_magics_commented(c.source) for c in code]
            first = next(
                i for i, c in enumerate(code) if "parameters" in c.metadata.get("tags", [])
            )
            setup = {"__name__": "__main__"}
            with contextlib.redirect_stdout(io.StringIO()):
                for cell in cells[first : first + 2]:  # parameters, then the imports and setup
                    exec(compile(cell, path.name, "exec"), setup)
            space, done = None, 0
            for name, index, source in mine:
                if space is None and _self_contained(source, setup):
                    spaces[(path.name, name)] = dict(setup)
                    continue
                space = space if space is not None else {"__name__": "__main__"}
                with contextlib.redirect_stdout(io.StringIO()):
                    for cell in cells[done:index]:
                        exec(compile(cell, path.name, "exec"), space)
                spaces[(path.name, name)] = dict(space)
                done = index
    finally:
        del os.environ["LABKIT_SMOKE"]
        plt.close("all")
    return spaces


def _bind(source, name, target):
    """The exercise cell with ``name`` bound to ``target`` (a function's name), or, with
    ``target=None``, left for the learner to write: what either shipping convention becomes."""
    if BINDING.search(source):
        return BINDING.sub(f"{name} = {target}" if target else "", source)
    if target is None:  # an unbound stub: as shipped
        return source
    call = CHECK_CALL.search(source).start()  # bind just before the checker runs
    return f"{source[:call]}{name} = {target}\n{source[call:]}"


def _run_exercise(space, source, name, target):
    """Run the exercise cell with ``name`` bound to ``target`` (see _bind); return what it
    printed."""
    cell = _bind(source, name, target)
    out = io.StringIO()
    wrong = {f.__name__: f for f in WRONG.values()}
    with contextlib.redirect_stdout(out):
        exec(compile(cell, "exercise", "exec"), dict(space, **wrong))
    return out.getvalue()


CELLS = [(nb, name, src) for nb, name, _, src in EXERCISES]


@pytest.mark.parametrize("notebook,name,source", CELLS, ids=lambda v: v if len(v) < 40 else "")
def test_exercise_as_shipped_and_unfinished(namespaces, notebook, name, source):
    space = namespaces[(notebook, name)]
    reference_name = CHECK_CALL.search(source).group(3)
    # With the reference bound (as shipped, or as the learner's correct answer): it passes.
    assert "✓" in _run_exercise(space, source, name, reference_name)
    # The stub the learner starts from: a friendly line, no exception, and the signature the
    # exercise expects.
    printed = _run_exercise(space, source, name, None)
    assert NOT_IMPLEMENTED in printed and "expected:" in printed, printed


@pytest.mark.parametrize("notebook,name,source", CELLS, ids=lambda v: v if len(v) < 40 else "")
def test_exercise_with_a_wrong_answer(namespaces, notebook, name, source):
    # A wrong version (including the boundary bug random inputs miss): a clear mismatch.
    printed = _run_exercise(namespaces[(notebook, name)], source, name, WRONG[name].__name__)
    assert "✗" in printed and NOT_IMPLEMENTED not in printed, printed
