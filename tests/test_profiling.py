"""--profile_steps: a TensorBoard profile of the chosen training steps, where TensorBoard looks."""

import glob
import os

import pytest

from agetf import train as train_cli
from agetf.training import profiling

from tiny_runs import tiny_config  # pytest puts tests/ on sys.path


def test_host_calls_end_at_the_profiles_start_and_end():
    profiler = profiling.StepProfiler((10, 20), "unused")
    assert [profiler.steps_before_boundary(step, 8) for step in (0, 8, 10, 16, 18, 20, 25)] == [
        8, 2, 8, 4, 2, 8, 8]
    assert profiling.StepProfiler(None, "unused").steps_before_boundary(8, 8) == 8


@pytest.mark.parametrize("steps", [(5, 5), (-1, 3), (7, 2)])
def test_a_window_that_holds_no_step_is_refused(steps):
    with pytest.raises(ValueError, match="0 <= START < END"):
        profiling.StepProfiler(steps, "unused")


@pytest.mark.parametrize("value", ["10", "10,20,30", "20,10", "-1,5", "a,b", "3,3"])
def test_a_bad_profile_steps_flag_is_one_line(parse_train_flags, data_dir, tmp_path, value):
    parse_train_flags(f"--data_dir={data_dir}", f"--model_dir={tmp_path}",
                      f"--profile_steps={value}")
    with pytest.raises(train_cli.UsageError) as error:
        train_cli.build_config()
    assert str(error.value) == (f"--profile_steps={value} must be START,END: two whole numbers "
                                "with 0 <= START < END, e.g. --profile_steps=10,20")


def test_the_flag_reaches_the_config(parse_train_flags, data_dir, tmp_path):
    parse_train_flags(f"--data_dir={data_dir}", f"--model_dir={tmp_path}", "--profile_steps=10,20")
    assert train_cli.build_config().runtime.profile_steps == (10, 20)
    parse_train_flags(f"--data_dir={data_dir}", f"--model_dir={tmp_path}")
    assert train_cli.build_config().runtime.profile_steps is None


@pytest.mark.slow
def test_a_run_writes_the_profile_of_its_steps_for_tensorboard(data_dir, tmp_path, capsys):
    from agetf.training import distributed_trainer as trainer_lib

    config = tiny_config(data_dir, tmp_path / "run", heads=("age",), epochs=1, steps_per_epoch=4,
                         steps_per_loop=4, summary_images=0, profile_steps=(1, 3), verbose=True)
    trainer = trainer_lib.Trainer(config)
    trainer.fit()
    assert not trainer.profiler.active
    profile_dir = tmp_path / "run" / "logs" / "plugins" / "profile"
    profiles = glob.glob(str(profile_dir / "*" / "*.xplane.pb"))
    assert len(profiles) == 1 and os.path.getsize(profiles[0]) > 0, profiles
    out = capsys.readouterr().out
    assert "Profiling training steps 1 to 3 (--profile_steps)" in out
    assert f"Profile written to {profile_dir}" in out
