"""Shared fixtures: the bad checkpoint files every CLI must reject in one line (model.load_checkpoint's errors)."""
import pytest
import torch

BAD_CHECKPOINTS = ("text", "truncated", "foreign")


@pytest.fixture(params=BAD_CHECKPOINTS)
def bad_checkpoint(request, tmp_path):
    """A path to a text file, a torch.save file cut short, or torch.save({'x': 1}): none is a checkpoint."""
    path = tmp_path / f"{request.param}.pt"
    if request.param == "text":
        path.write_text("encoder: not a checkpoint\n")
    elif request.param == "truncated":  # a real checkpoint whose write was cut short
        torch.save({"encoder": {"w": torch.zeros(256, 256)}, "predictor": {}, "target_encoder": {}}, path)
        path.write_bytes(path.read_bytes()[:4096])
    else:
        torch.save({"x": 1}, path)
    return str(path)


def assert_one_line_error(excinfo, err, path):
    """Exit code 2 (common.fail), one stderr line naming the file; an uncaught exception would not get here."""
    lines = err.strip().splitlines()
    assert excinfo.value.code == 2 and len(lines) == 1 and path in lines[0] and "Traceback" not in err, err
