"""AWS Batch on moto + our Docker daemon, for the tests that run `--with batch`.

moto's server serves every service (S3, IAM, EC2, Batch); its Batch backend runs each job as a
real container in the daemon at DOCKER_HOST, on the host network (``MOTO_DOCKER_NETWORK_MODE=host``),
so a job reaches moto (and nothing else) on 127.0.0.1.

The job image is `repro image build`'s base image plus the shims a job needs against moto (see
``SHIMS``), committed as a new tag (metadata only: no file system change, so it takes a second).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import _wait_for_port, free_port

REGION = "us-east-1"
QUEUE = "repro-queue"
COMPUTE_ENV = "repro-ce"
JOB_ROLE = "repro-batch-job-role"


@dataclass
class BatchWorld:
    endpoint: str  # http://127.0.0.1:<port>, moto's server
    bucket: str
    queue: str
    image: str  # the job image's tag
    job_role_arn: str
    #: the instance cache (``batch-cache``): every job is a container of this machine, this folder its
    #: host volume; made empty for each world (the caller removes it)
    cache: str = ""
    #: what a Metaflow process (and boto3, and repro) needs in its environment to use it all
    env: dict[str, str] = field(default_factory=dict)

    def s3(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def sysroot(self) -> str:
        return f"s3://{self.bucket}/metaflow"

    def store(self, name: str = "store") -> str:
        return f"s3://{self.bucket}/{name}"


def start_moto(docker_host: str) -> tuple[subprocess.Popen, str]:
    """moto's server on loopback, running Batch jobs in ``docker_host``'s daemon on the host network."""
    port = free_port()
    env = {
        **os.environ,
        "MOTO_DOCKER_NETWORK_MODE": "host",
        "DOCKER_HOST": docker_host,
        "MOTO_HOST": "127.0.0.1",
        "MOTO_PORT": str(port),
    }
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("moto_server.py")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    _wait_for_port(port)
    return proc, f"http://127.0.0.1:{port}"


def shims(endpoint: str, closed_port: int) -> dict[str, str]:
    """The job environment moto does not provide (verified with plain Metaflow `run --with batch`):
    credentials (Metaflow forwards none), the AWS_BATCH_* variables Metaflow's Batch decorator reads,
    a proxy on a closed loopback port so the EC2 metadata address (169.254.169.254) Metaflow polls
    never leaves loopback, and no dependency installation at task start."""
    proxy = f"http://127.0.0.1:{closed_port}"
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_BATCH_JOB_ATTEMPT": "1",
        "AWS_BATCH_CE_NAME": COMPUTE_ENV,
        "AWS_BATCH_JQ_NAME": QUEUE,
        "AWS_EXECUTION_ENV": "AWS_ECS_EC2",
        "HTTP_PROXY": proxy,
        "HTTPS_PROXY": proxy,
        "http_proxy": proxy,
        "https_proxy": proxy,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "METAFLOW_SKIP_INSTALL_DEPENDENCIES": "1",
    }


def job_image(docker_host: str, base_tag: str, env: dict[str, str]) -> str:
    """``base_tag`` with ``env`` baked in, tagged by a digest of both."""
    import hashlib

    import docker

    c = docker.DockerClient(base_url=docker_host)
    key = hashlib.sha256(json.dumps([base_tag, sorted(env.items())]).encode()).hexdigest()[:16]
    tag = f"repro-batch-job:{key}"
    try:
        c.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    container = c.containers.create(base_tag, ["true"], network_mode="host")
    try:
        container.commit("repro-batch-job", key, changes=[f"ENV {k}={v}" for k, v in sorted(env.items())])
    finally:
        container.remove()
    return tag


def make_world(endpoint: str, docker_host: str, base_tag: str) -> BatchWorld:
    import boto3

    kw = {"endpoint_url": endpoint, "region_name": REGION, "aws_access_key_id": "testing"}
    kw["aws_secret_access_key"] = "testing"
    bucket = "repro-batch"
    boto3.client("s3", **kw).create_bucket(Bucket=bucket)
    iam = boto3.client("iam", **kw)
    trust = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": ["batch.amazonaws.com", "ecs-tasks.amazonaws.com", "ec2.amazonaws.com"]},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
    )
    service_role = iam.create_role(RoleName="repro-batch-service", AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    job_role = iam.create_role(RoleName=JOB_ROLE, AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    iam.create_role(RoleName="repro-batch-instance", AssumeRolePolicyDocument=trust)
    profile = iam.create_instance_profile(InstanceProfileName="repro-batch-instance")["InstanceProfile"]["Arn"]
    iam.add_role_to_instance_profile(InstanceProfileName="repro-batch-instance", RoleName="repro-batch-instance")
    ec2 = boto3.client("ec2", **kw)
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    subnet = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"][0]["SubnetId"]
    group = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["SecurityGroups"][0]["GroupId"]
    batch = boto3.client("batch", **kw)
    ce = batch.create_compute_environment(
        computeEnvironmentName=COMPUTE_ENV,
        type="MANAGED",
        state="ENABLED",
        computeResources={
            "type": "EC2",
            "minvCpus": 0,
            "maxvCpus": 4,
            "desiredvCpus": 0,
            "instanceTypes": ["optimal"],
            "subnets": [subnet],
            "securityGroupIds": [group],
            "instanceRole": profile,
        },
        serviceRole=service_role,
    )["computeEnvironmentArn"]
    batch.create_job_queue(
        jobQueueName=QUEUE,
        state="ENABLED",
        priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": ce}],
    )
    closed = free_port()  # nothing listens there: the metadata-address poll is refused at once
    image = job_image(docker_host, base_tag, shims(endpoint, closed))
    world = BatchWorld(endpoint, bucket, QUEUE, image, job_role, tempfile.mkdtemp(prefix="repro-batch-cache-"))
    world.env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": endpoint,
        # boto3 prefers the S3-specific variable, which the session's s3_server fixture sets for the
        # tests that ran before: without this, a later Batch test's store went to that other moto
        "AWS_ENDPOINT_URL_S3": endpoint,
        "METAFLOW_DEFAULT_DATASTORE": "s3",
        "METAFLOW_DATASTORE_SYSROOT_S3": world.sysroot(),
        "METAFLOW_S3_ENDPOINT_URL": endpoint,
        "METAFLOW_BATCH_JOB_QUEUE": QUEUE,
        "METAFLOW_ECS_S3_ACCESS_IAM_ROLE": job_role,
        "METAFLOW_BATCH_CONTAINER_IMAGE": image,
        "METAFLOW_DEFAULT_METADATA": "local",
        "REPRO_BATCH_CACHE": world.cache,
    }
    return world
