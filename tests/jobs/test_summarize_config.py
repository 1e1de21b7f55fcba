"""The summarization job's config refuses folders that would make it read its own output; its command
fails when every row it read failed; with missing_ok an input that is gone is nothing to do."""

from __future__ import annotations

import pytest

from jobs.summarize import SummarizeConfig, exit_status, main


@pytest.mark.parametrize(
    "folders, reason",
    [
        ({"input": "s3://b/proj/docs", "output": "s3://b/proj"}, "overlap"),
        ({"input": "s3://b/docs", "output": "s3://b/docs/summaries"}, "overlap"),
        ({"input": "s3://b/docs", "output": "s3://b/out", "errors_output": "s3://b/out/errors"}, "lies under output"),
        ({"input": "s3://b/docs", "output": "s3://b/out", "errors_output": "s3://b/docs/errors"}, "lies under input"),
        ({"input": "s3a://b/docs", "output": "s3://b//docs/summaries"}, "overlap"),
    ],
)
def test_the_job_refuses_folders_that_would_read_its_own_output(folders, reason):
    with pytest.raises(ValueError, match=reason):
        SummarizeConfig(**folders)
    assert SummarizeConfig(input="s3://b/docs", output="s3://b/out", errors_output="s3://b/out/_errors").errors_uri
    assert SummarizeConfig(input="s3://b/docs", output="s3://b/docs/_summaries").errors_uri  # not listed as input


def test_a_summary_length_the_context_cannot_hold_is_refused_before_anything_starts():
    with pytest.raises(ValueError, match="engine.max_model_len=2048 cannot hold a call with sampling.max_tokens=1500"):
        SummarizeConfig(input="in", output="out", sampling={"max_tokens": 1500}, engine={"max_model_len": 2048})
    assert SummarizeConfig(input="in", output="out", sampling={"max_tokens": 600}, engine={"max_model_len": 2048})


@pytest.mark.parametrize(
    "summarized, already_done, errors, status",
    [(0, 0, 3, 1), (2, 0, 3, 0), (0, 5, 3, 0), (0, 0, 0, 0)],
)
def test_the_command_fails_only_when_every_row_it_read_failed(summarized, already_done, errors, status):
    report = {
        "summarized": summarized,
        "already_done": already_done,
        "errors": errors,
        "errors_output": "s3://b/out_errors",
    }
    assert exit_status(report) == status


def test_with_missing_ok_an_input_deleted_before_the_job_ran_is_nothing_to_do(tmp_path):
    """The dispatcher's rule sets it: a file deleted before its job ran ends as done, not as a dead letter."""
    report = main(SummarizeConfig(input=str(tmp_path / "gone.parquet"), output=str(tmp_path / "out"), missing_ok=True))
    assert report["input_missing"] is True and (report["summarized"], report["errors"]) == (0, 0)
    assert exit_status(report) == 0 and not (tmp_path / "out").exists()
    with pytest.raises(FileNotFoundError, match="no file or folder at"):
        main(SummarizeConfig(input=str(tmp_path / "gone.parquet"), output=str(tmp_path / "out")))
