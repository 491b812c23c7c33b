#!/bin/sh
# Move the writer of an Aurora global database to TARGET_CLUSTER_ARN (terraform_data.writer in
# envs/<env>/main.tf runs this when primary_region changes). Idempotent: nothing happens when
# the target already writes, so the first apply of an environment (and any re-run) is a no-op.
#   ALLOW_DATA_LOSS=false  switchover: both regions up, replication caught up first, no loss
#   ALLOW_DATA_LOSS=true   failover: the old primary is unreachable; what it had not replicated
#                          is lost (Aurora's RPO, typically under a second)
# Needs the aws CLI and credentials allowed rds:*GlobalCluster*, as the pipeline's role has.
set -eu

: "${GLOBAL_CLUSTER_ID:?}" "${TARGET_CLUSTER_ARN:?}" "${TARGET_AWS_REGION:?}"
ALLOW_DATA_LOSS="${ALLOW_DATA_LOSS:-false}"

writer() {
  aws rds describe-global-clusters --region "$TARGET_AWS_REGION" \
    --global-cluster-identifier "$GLOBAL_CLUSTER_ID" \
    --query 'GlobalClusters[0].GlobalClusterMembers[?IsWriter].DBClusterArn | [0]' --output text
}

if [ "$(writer)" = "$TARGET_CLUSTER_ARN" ]; then
  echo "switchover: $TARGET_CLUSTER_ARN already writes"
  exit 0
fi

if [ "$ALLOW_DATA_LOSS" = "true" ]; then
  aws rds failover-global-cluster --region "$TARGET_AWS_REGION" \
    --global-cluster-identifier "$GLOBAL_CLUSTER_ID" \
    --target-db-cluster-identifier "$TARGET_CLUSTER_ARN" --allow-data-loss
else
  aws rds switchover-global-cluster --region "$TARGET_AWS_REGION" \
    --global-cluster-identifier "$GLOBAL_CLUSTER_ID" \
    --target-db-cluster-identifier "$TARGET_CLUSTER_ARN"
fi

# Services roll to the new endpoint only after this returns: wait until the target writes.
for _ in $(seq 1 120); do
  if [ "$(writer)" = "$TARGET_CLUSTER_ARN" ]; then
    echo "switchover: $TARGET_CLUSTER_ARN writes"
    exit 0
  fi
  sleep 10
done
echo "switchover: $TARGET_CLUSTER_ARN does not write after 20 minutes" >&2
exit 1
