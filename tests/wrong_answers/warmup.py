"""Wrong answers to the exercises of notebooks/00_pytorch_warmup.py: one per exercise, each a
mistake a learner could make (tests/test_exercise.py runs every exercise with it and expects ✗)."""


def _step_without_zero_grad(model, optimizer, batch, loss_fn):
    loss = loss_fn(model, batch)
    loss.backward()
    optimizer.step()
    return loss.item()


WRONG = {
    "my_train_step": _step_without_zero_grad,
}
