"""Drives the batch emulator with the official Azure Batch Python SDK (azure-batch 15.1.0).

Usage: sdk_check.py ENDPOINT ACCOUNT_NAME ACCOUNT_KEY

The emulator must serve the built-in scenario. Every check is an assert; the script prints
"sdk_check: OK" and exits 0 only when all of them pass. tests/emulator/sdk.rs runs it.
"""

import datetime
import os
import sys
import tempfile
import time

from azure.batch import BatchClient
from azure.batch.models import (
    BatchJobDisableOptions,
    BatchNodeIdentityReference,
    BatchNodeRemoveOptions,
    UploadBatchServiceLogsOptions,
)

# begin_terminate_job and begin_reimage_node take these models, but 15.1.0 does not export them
# from azure.batch.models.
from azure.batch.models._models import BatchJobTerminateOptions, BatchNodeReimageOptions
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

WRONG_KEY = "c2VjcmV0LWtleS10aGF0LWlzLW5vdC10aGUtYWNjb3VudC1rZXk="


def streamed_error_code(error: HttpResponseError) -> str:
    error.response.read()
    return error.response.json()["code"]


def check(endpoint: str, name: str, key: str) -> None:
    client = BatchClient(endpoint, AzureNamedKeyCredential(name, key))

    # Jobs and tasks.
    job_ids = {job.id for job in client.list_jobs()}
    assert {"etl", "ingest", "prep", "prep-fail", "lost-node"} <= job_ids, job_ids
    etl = client.get_job("etl")
    assert etl.state == "active", etl.state
    assert etl.pool_info.pool_id == "linux"
    completed = [job.id for job in client.list_jobs(filter="state eq 'completed'", select=["id", "state"])]
    assert completed == ["failfast", "nightly"], completed

    # max_results=4 forces the SDK to follow odata.nextLink several times.
    tasks = list(client.list_tasks("etl", max_results=4))
    assert len(tasks) == 13, [t.id for t in tasks]
    failed = {
        t.id
        for t in client.list_tasks(
            "etl", filter="state eq 'completed' and executionInfo/result eq 'failure'", select=["id", "executionInfo"]
        )
    }
    assert {"oom", "sigkill", "no-shell", "big-log"} <= failed, failed
    task = client.get_task("etl", "oom")
    assert task.execution_info.exit_code == 137
    assert task.execution_info.failure_info.code == "FailureExitCode"
    assert task.node_info.node_id == "tvm-01"
    assert task.url.startswith(endpoint), task.url

    counts = client.get_job_task_counts("etl")
    assert counts.task_counts.failed == 7, counts
    assert counts.task_counts.running == 1, counts

    # Files: list, download (whole and ranged), properties, node files.
    names = {f.name: f for f in client.list_task_files("etl", "ok-1", recursive=True)}
    assert "wd/summary.json" in names, names
    assert names["wd"].is_directory is True
    stdout_len = int(names["stdout.txt"].properties.content_length)
    stdout = b"".join(client.download_task_file("etl", "ok-1", "stdout.txt"))
    assert len(stdout) == stdout_len
    summary = b"".join(client.download_task_file("etl", "ok-1", "wd/summary.json"))
    assert b"120394" in summary, summary
    stderr = b"".join(client.download_task_file("etl", "oom", "stderr.txt"))
    assert b"Killed" in stderr, stderr
    part = b"".join(client.download_task_file("etl", "oom", "stderr.txt", ocp_range="bytes=0-4"))
    assert part == stderr[:5], part
    props = client.get_task_file_properties("etl", "oom", "stderr.txt")
    assert int(props.content_length) == len(stderr)
    assert props.is_directory is False
    assert props.url.endswith("/jobs/etl/tasks/oom/files/stderr.txt"), props.url
    assert props.creation_time is not None and props.last_modified is not None
    big = client.get_task_file_properties("etl", "big-log", "stdout.txt")
    assert int(big.content_length) == 2147483648
    node_files = {f.name for f in client.list_node_files("linux", "tvm-01", recursive=True)}
    assert "workitems/etl/job-1/oom/stderr.txt" in node_files, node_files
    node_props = client.get_node_file_properties("linux", "tvm-01", "startup/stdout.txt")
    assert int(node_props.content_length) > 0

    # Prep/release status and the prep task's logs on the node.
    rows = list(client.list_job_preparation_and_release_task_status("prep-fail"))
    assert len(rows) == 1
    prep = rows[0].job_preparation_task_execution_info
    assert prep.result == "failure" and prep.exit_code == 100
    prep_stderr = b"".join(
        client.download_node_file(rows[0].pool_id, rows[0].node_id, prep.task_root_directory + "/stderr.txt")
    )
    assert b"Unable to locate package" in prep_stderr, prep_stderr
    ok_rows = list(client.list_job_preparation_and_release_task_status("prep"))
    assert len(ok_rows) == 2

    # Errors come back as the SDK's exceptions with the Batch error code.
    try:
        client.get_job("no-such-job")
        raise AssertionError("expected JobNotFound")
    except ResourceNotFoundError as error:
        assert error.error.code == "JobNotFound", error.error
    try:
        list(client.list_job_preparation_and_release_task_status("etl"))
        raise AssertionError("expected JobPreparationTaskNotSpecified")
    except ResourceExistsError as error:
        assert error.error.code == "JobPreparationTaskNotSpecified", error.error
    # Downloads are streamed, so the SDK does not parse their error bodies (error.error is
    # None); read the body to check the code.
    try:
        b"".join(client.download_task_file("etl", "queued", "stdout.txt"))
        raise AssertionError("expected OperationInvalidForCurrentState")
    except ResourceExistsError as error:
        assert streamed_error_code(error) == "OperationInvalidForCurrentState"
    try:
        b"".join(client.download_task_file("lost-node", "t1", "stderr.txt"))
        raise AssertionError("expected NodeNotFound")
    except ResourceNotFoundError as error:
        assert streamed_error_code(error) == "NodeNotFound"

    # Job actions through the SDK's long-running-operation pollers.
    client.begin_disable_job("render", BatchJobDisableOptions(disable_tasks="requeue"), polling_interval=0).result()
    assert client.get_job("render").state == "disabled"
    client.begin_enable_job("render", polling_interval=0).result()
    assert client.get_job("render").state == "active"
    client.begin_terminate_job(
        "ingest", BatchJobTerminateOptions(termination_reason="sdk check"), polling_interval=0
    ).result()
    ingest = client.get_job("ingest")
    assert ingest.state == "completed", ingest.state
    assert ingest.execution_info.termination_reason == "sdk check", ingest.execution_info
    # 15.1.0 cannot terminate without a reason: with no (or empty) options it serializes a None
    # content-type and raises ValueError before sending. The Rust tests cover the default reason.
    client.terminate_task("etl", "running")
    assert client.get_task("etl", "running").state == "completed"

    check_pools_and_nodes(client)

    # A wrong key is refused with the real error body.
    wrong = BatchClient(endpoint, AzureNamedKeyCredential(name, WRONG_KEY))
    try:
        list(wrong.list_jobs())
        raise AssertionError("expected AuthenticationFailed")
    except HttpResponseError as error:
        assert error.status_code == 403, error.status_code
        assert error.error.code == "AuthenticationFailed", error.error
        details = {d.code: d.message for d in error.error.details}
        assert "Server used following string to sign" in details["AuthenticationErrorDetail"], details


DISK_FULL = "tvm-1695681911_1-20261204t080000z"
LOST = "tvm-1695681911_2-20261204t080000z"
START_FAILED = "tvm-1695681911_5-20261204t080000z"
TROUBLE = "state eq 'unusable' or state eq 'starttaskfailed' or startTaskInfo/result eq 'failure'"


def check_pools_and_nodes(client: BatchClient) -> None:
    # Pools: resize errors with their values, autoscale errors, a stuck delete.
    pools = {pool.id: pool for pool in client.list_pools(max_results=2)}
    assert {"quota-pool", "gpu-pool", "scaler", "old-pool", "workers"} <= set(pools), list(pools)
    quota = client.get_pool("quota-pool")
    assert quota.resize_errors[0].code == "AccountCoreQuotaReached", quota.resize_errors
    gpu = pools["gpu-pool"]
    values = {v.name: v.value for v in gpu.resize_errors[0].error_values}
    assert "insufficient capacity" in values["Reason"], values
    assert values["Provider Error Json Truncated"] == "False", values
    assert pools["scaler"].auto_scale_run.error.code == "InsufficientSampleData"
    assert pools["old-pool"].state == "deleting"

    # Nodes in trouble: one filtered list, paged.
    nodes = list(
        client.list_nodes("workers", filter=TROUBLE, select=["id", "state", "errors", "startTaskInfo"], max_results=2)
    )
    assert [n.id for n in nodes] == [
        DISK_FULL,
        LOST,
        "tvm-1695681911_4-20261204t080000z",
        START_FAILED,
    ], [n.id for n in nodes]
    assert nodes[0].state == "unusable"
    assert nodes[0].errors[0].code == "DiskFull"
    assert nodes[0].errors[0].error_details[0].name == "Message"
    assert not nodes[1].errors
    assert nodes[2].start_task_info.result == "failure"
    node = client.get_node("workers", DISK_FULL)
    assert node.vm_size == "standard_d4s_v5" and node.is_dedicated is True

    counts = {c.pool_id: c for c in client.list_pool_node_counts()}
    assert counts["workers"].dedicated.unusable == 2, counts["workers"]
    assert counts["workers"].dedicated.start_task_failed == 1
    assert counts["workers"].dedicated.total == 5

    # Agent logs, into a local directory (the emulator's file:// extension); they arrive later.
    with tempfile.TemporaryDirectory() as directory:
        url = "file://" + directory + "/"
        result = client.upload_node_logs(
            "workers",
            DISK_FULL,
            UploadBatchServiceLogsOptions(
                container_url=url,
                start_time=datetime.datetime(2026, 12, 4, 8, 0, tzinfo=datetime.timezone.utc),
                identity_reference=BatchNodeIdentityReference(resource_id="/subscriptions/s/uami"),
            ),
        )
        assert result.number_of_files_uploaded == 4, result
        assert result.virtual_directory_name.startswith("workers/tvm-1695681911-1-"), result
        landed = os.path.join(directory, result.virtual_directory_name)
        for _ in range(500):
            found = sum(len(files) for _, _, files in os.walk(landed))
            if found == 4:
                break
            time.sleep(0.02)
        assert found == 4, found

    # Node actions through the SDK's pollers: remove (polls the pool), reimage (polls the node).
    client.begin_remove_nodes(
        "workers", BatchNodeRemoveOptions(node_ids=[DISK_FULL], node_deallocation_option="requeue"), polling_interval=0
    ).result()
    assert client.get_pool("workers").allocation_state == "steady"
    try:
        client.get_node("workers", DISK_FULL)
        raise AssertionError("expected NodeNotFound")
    except ResourceNotFoundError as error:
        assert error.error.code == "NodeNotFound", error.error
    client.begin_reimage_node(
        "workers", START_FAILED, BatchNodeReimageOptions(node_reimage_option="requeue"), polling_interval=0
    ).result()
    assert client.get_node("workers", START_FAILED).state == "idle"
    try:
        client.begin_remove_nodes("old-pool", BatchNodeRemoveOptions(node_ids=["x"]), polling_interval=0).result()
        raise AssertionError("expected PoolBeingDeleted")
    except ResourceExistsError as error:
        assert error.error.code == "PoolBeingDeleted", error.error


if __name__ == "__main__":
    check(*sys.argv[1:4])
    print("sdk_check: OK")
