variable "environment" {
  description = "Environment name: prefix of every name and the Environment tag."
  type        = string
}

variable "account_id" {
  description = "The AWS account this environment lives in; the providers refuse any other. Given by the pipeline (TF_VAR_account_id), never written in the code."
  type        = string

  validation {
    condition     = can(regex("^[0-9]{12}$", var.account_id))
    error_message = "account_id is a 12-digit AWS account id."
  }
}

variable "regions" {
  description = "The regions of the environment, keyed by our region name (DOTSHOP_REGION: a key of core/settings.py REGIONS). Each key needs its provider block in providers.tf and its module blocks in main.tf: Terraform cannot create providers in a loop."
  type = map(object({
    aws_region        = string
    cidr              = string
    currency          = string
    db_instance_count = optional(number, 2)
    api_min_count     = optional(number, 2)
    api_max_count     = optional(number, 20)
  }))

  validation {
    condition     = length(var.regions) >= 2
    error_message = "An environment has at least two regions: failover needs somewhere to go."
  }
}

variable "primary_region" {
  description = "The region whose database cluster writes. Failover = changing this: the global cluster switches its writer here and every service's DOTSHOP_PRIMARY_REGION and database host follow. Nothing else depends on it."
  type        = string

  validation {
    condition     = contains(keys(var.regions), var.primary_region)
    error_message = "primary_region must be a key of regions."
  }
}

variable "ops_region" {
  description = "Where the processes that must not run twice (sync, checks) run. Not moved by a failover (they reach the writer wherever it is); moving them is its own change."
  type        = string

  validation {
    condition     = contains(keys(var.regions), var.ops_region)
    error_message = "ops_region must be a key of regions."
  }
}

variable "edge_aws_region" {
  description = "The AWS region of CloudFront's API and certificates (AWS fixes it; it is in terraform.tfvars, not in code)."
  type        = string
}

variable "allow_data_loss" {
  description = "How the writer moves: false = switchover (both regions up, no data lost); true = failover (the old primary is unreachable; writes it had not replicated are lost). Set by the pipeline's manual input for the one run that needs it."
  type        = bool
  default     = false
}

variable "domain" {
  description = "The storefront's DNS zone (a Route 53 public hosted zone in the account)."
  type        = string
}

variable "storefront_origin" {
  description = "Host name of the storefront's pages (CloudFront's default origin)."
  type        = string
}

variable "shopify_shop" {
  description = "The Shopify store (SHOPIFY_SHOP), e.g. dotshop.myshopify.com."
  type        = string
}

variable "image" {
  description = "The dotshop container image, by digest (the pipeline passes the one it built)."
  type        = string
}

variable "engine_version" {
  description = "Aurora PostgreSQL version of the global database."
  type        = string
  default     = "16.4"
}
