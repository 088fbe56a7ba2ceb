"""The read-only access policy (AWS IAM) of the production pack for serving consumers."""

from typing import Any

from adas.registry.config import IamPolicy
from adas.registry.models import Entry


def artifact_location(
    iam: IamPolicy, bucket: str | None = None, prefix: str | None = None
) -> tuple[str, str]:
    """``(bucket, key root)`` of the production artifacts: the given ones, else the policy's."""
    return bucket or iam.bucket, (prefix if prefix is not None else iam.prefix).strip("/")


def readonly_iam_policy(
    entry: Entry, iam: IamPolicy, bucket: str | None = None, prefix: str | None = None
) -> dict[str, Any]:
    """IAM policy document for serving consumers: read-only on the production pack's prefix,
    explicit deny of every write there, TLS only, pull of the serving image."""
    bucket, root = artifact_location(iam, bucket, prefix)
    pack = entry.body.pointers.pack_prefix.strip("/")
    key_prefix = f"{root}/{pack}" if root else pack
    models = f"{root}/models" if root else "models"
    objects = f"arn:aws:s3:::{bucket}/{key_prefix}/*"
    statements: list[dict[str, Any]] = [
        {
            "Sid": "ReadProductionPack",
            "Effect": "Allow",
            "Action": [
                "s3:GetObject",
                "s3:GetObjectVersion",
                "s3:GetObjectAttributes",
                "s3:GetObjectTagging",
            ],
            "Resource": [objects],
        },
        {
            "Sid": "ListProductionPack",
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": [f"arn:aws:s3:::{bucket}"],
            "Condition": {"StringLike": {"s3:prefix": [f"{key_prefix}/*", key_prefix]}},
        },
        {
            "Sid": "DenyWritesToModelArtifacts",
            "Effect": "Deny",
            "Action": [
                "s3:PutObject",
                "s3:PutObjectAcl",
                "s3:PutObjectTagging",
                "s3:DeleteObject",
                "s3:DeleteObjectVersion",
                "s3:RestoreObject",
                "s3:PutObjectRetention",
                "s3:PutObjectLegalHold",
            ],
            "Resource": [f"arn:aws:s3:::{bucket}/{models}/*"],
        },
        {
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Action": ["s3:*"],
            "Resource": [f"arn:aws:s3:::{bucket}", objects],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        },
    ]
    if iam.ecr_repository_arn:
        statements += [
            {
                "Sid": "PullServingImage",
                "Effect": "Allow",
                "Action": [
                    "ecr:BatchGetImage",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchCheckLayerAvailability",
                ],
                "Resource": [iam.ecr_repository_arn],
            },
            {
                "Sid": "EcrLogin",
                "Effect": "Allow",
                "Action": ["ecr:GetAuthorizationToken"],
                "Resource": ["*"],
            },
        ]
    return {
        "Version": "2012-10-17",
        "Id": f"adas-serving-readonly-{entry.body.model_name}-{entry.version}-{entry.body.device}-{entry.body.precision}",
        "Statement": statements,
    }
