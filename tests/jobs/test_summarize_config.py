"""The summarization job's config refuses folders that would make it read its own output."""

from __future__ import annotations

import pytest

from jobs.summarize import SummarizeConfig


@pytest.mark.parametrize(
    "folders, reason",
    [
        ({"input": "s3://b/proj/docs", "output": "s3://b/proj"}, "overlap"),
        ({"input": "s3://b/docs", "output": "s3://b/docs/summaries"}, "overlap"),
        ({"input": "s3://b/docs", "output": "s3://b/out", "errors_output": "s3://b/out/errors"}, "lies under output"),
    ],
)
def test_the_job_refuses_folders_that_would_read_its_own_output(folders, reason):
    with pytest.raises(ValueError, match=reason):
        SummarizeConfig(**folders)
    assert SummarizeConfig(input="s3://b/docs", output="s3://b/out", errors_output="s3://b/out/_errors").errors_uri
