#!/bin/sh
# Create an environment's remote state storage if it does not exist yet, from its backend.hcl:
# an S3 bucket (versioned, encrypted, private, TLS only) and a DynamoDB lock table. Idempotent;
# the pipeline runs it before `terraform init`, so a new environment stands up in one run.
#   usage: bootstrap-state.sh infra/terraform/envs/<env>/backend.hcl
set -eu

conf="$1"
value() { sed -n "s/^$1 *= *\"\(.*\)\"/\1/p" "$conf"; }
bucket="$(value bucket)"
region="$(value region)"
table="$(value dynamodb_table)"
: "${bucket:?no bucket in $conf}" "${region:?no region in $conf}" "${table:?no dynamodb_table in $conf}"

if ! aws s3api head-bucket --bucket "$bucket" 2>/dev/null; then
  if [ "$region" = "us-east-1" ]; then
    aws s3api create-bucket --bucket "$bucket" --region "$region"
  else
    aws s3api create-bucket --bucket "$bucket" --region "$region" \
      --create-bucket-configuration "LocationConstraint=$region"
  fi
  aws s3api wait bucket-exists --bucket "$bucket"
fi
aws s3api put-bucket-versioning --bucket "$bucket" --versioning-configuration Status=Enabled
aws s3api put-bucket-encryption --bucket "$bucket" --server-side-encryption-configuration \
  '{"Rules":[{"ApplyServerSideEncryptionByDefault":{"SSEAlgorithm":"aws:kms"},"BucketKeyEnabled":true}]}'
aws s3api put-public-access-block --bucket "$bucket" --public-access-block-configuration \
  BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=true,RestrictPublicBuckets=true
aws s3api put-bucket-policy --bucket "$bucket" --policy "{\"Version\":\"2012-10-17\",\"Statement\":[{\"Sid\":\"TLSOnly\",\"Effect\":\"Deny\",\"Principal\":\"*\",\"Action\":\"s3:*\",\"Resource\":[\"arn:aws:s3:::$bucket\",\"arn:aws:s3:::$bucket/*\"],\"Condition\":{\"Bool\":{\"aws:SecureTransport\":\"false\"}}}]}"

if ! aws dynamodb describe-table --region "$region" --table-name "$table" >/dev/null 2>&1; then
  aws dynamodb create-table --region "$region" --table-name "$table" \
    --attribute-definitions AttributeName=LockID,AttributeType=S \
    --key-schema AttributeName=LockID,KeyType=HASH \
    --billing-mode PAY_PER_REQUEST --sse-specification Enabled=true
  aws dynamodb wait table-exists --region "$region" --table-name "$table"
fi
echo "state: s3://$bucket (lock $table, $region)"
