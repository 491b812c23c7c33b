# Remote state of the prod environment: an S3 bucket (versioned, encrypted) and a DynamoDB
# table for the lock, created once per account before the first pipeline run (README).
bucket         = "dotshop-terraform-state-prod"
key            = "envs/prod/terraform.tfstate"
region         = "us-east-1"
dynamodb_table = "dotshop-terraform-lock-prod"
encrypt        = true
