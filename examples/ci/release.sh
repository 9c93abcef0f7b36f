#!/bin/sh
# Publish the app as a release and roll it out in place, from any CI job.
#
# Exits non-zero, failing the pipeline, when the directory cannot be released (the agent would
# refuse it), the release id is already published with other bytes, or the rollout ends Failed
# or RolledBack (exit 1) or does not end within CFO_TIMEOUT seconds (exit 2). A re-run of the
# same commit publishes nothing new (same bytes, same sha256) and releases again.
#
# Needs kubectl and the kubectl-cfo plugin (pip install customer-friendly-operator), a
# kubeconfig for the cluster, and credentials that may write the source (S3: the standard AWS
# chain, e.g. OIDC web identity in CI).
#
#   CFO_DEPLOYMENT  the Deployment to release (required)
#   CFO_SOURCE      its customer-friendly.dev/source, e.g. s3://acme-releases/web/{release}.tar.gz (required)
#   CFO_NAMESPACE   its namespace (default: the kubeconfig context's)
#   CFO_RELEASE     the release id (default: the commit, 12 hex digits)
#   CFO_APP_DIR     the app directory (default: .)
#   CFO_TIMEOUT     seconds to wait for the rollout (default: 1800)
set -eu

: "${CFO_DEPLOYMENT:?set CFO_DEPLOYMENT to the Deployment to release}"
: "${CFO_SOURCE:?set CFO_SOURCE to the Deployment's source, such as s3://bucket/web/{release}.tar.gz}"
release="${CFO_RELEASE:-$(git rev-parse --short=12 HEAD)}"

kubectl cfo publish "${CFO_APP_DIR:-.}" "$release" --source "$CFO_SOURCE"
kubectl cfo release "$CFO_DEPLOYMENT" "$release" ${CFO_NAMESPACE:+--namespace "$CFO_NAMESPACE"} \
    --wait --timeout "${CFO_TIMEOUT:-1800}"
