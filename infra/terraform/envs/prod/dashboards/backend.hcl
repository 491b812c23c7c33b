# State of prod's dashboards root: the environment's bucket and lock table, a key of its own.
bucket         = "dotshop-terraform-state-prod"
key            = "envs/prod/dashboards/terraform.tfstate"
region         = "us-east-1"
dynamodb_table = "dotshop-terraform-lock-prod"
encrypt        = true
