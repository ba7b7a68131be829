"""The local cloud's IAM: every AWS call a handler makes is authorised against its function's role policy before it
reaches moto, and a call the policy does not allow fails with the AccessDenied error AWS returns.

moto evaluates no identity policy the platform could rely on (its own enforcement checks resources only for S3, SQS,
IAM and STS and denies every least-privilege statement elsewhere), so the check happens on the client side: every
botocore client call in this process passes ``BaseClient._make_api_call``, where the guard maps the operation and its
parameters to the IAM actions and resource ARNs AWS authorises it with (``operations``) and asks moto's policy
evaluator (``moto.iam.access_control.IAMPolicy``) about each. The caller is the function whose handler runs on the
calling thread (its ``AWS_LAMBDA_FUNCTION_NAME``, from the runtime's per-thread environment); calls from outside a
handler (tests, the CLI, moto's own Step Functions engine) are not checked. An operation with no mapping fails
loudly (``operations.UnmappedOperation``), so a new call cannot slip through unchecked.

Where the policies come from: in the tests, the synthesized CloudFormation template (``policies.template_policies``,
the thing that is deployed); in ``mlops local up``, the platform's declaration (``policies.platform_policies``,
from ``mlops.aws.access``); the check itself is ``guard.Guard``; a parity test keeps the two equal.

What it does not evaluate (docs/local.md): resource policies other than Lambda's (mlops.local.permissions), KMS
(S3, DynamoDB, SNS and SQS call KMS on the caller's behalf; locally nothing is encrypted), permission boundaries,
SCPs and session policies, and condition keys other than the ones an operation passes (``lambda:Principal`` of
AddPermission, ``s3:prefix`` of a listing); moto's evaluator applies ``StringEquals`` only and ignores other
condition operators (a ``StringLike`` on ``s3:prefix`` is taken as met).
"""
