variable "name" {
  description = "Prefix of every name, e.g. dotshop-prod-us."
  type        = string
}

variable "region_key" {
  description = "Our region name (DOTSHOP_REGION: us, eu), a key of core/settings.py REGIONS."
  type        = string
}

variable "primary_region" {
  description = "The region whose database writes (DOTSHOP_PRIMARY_REGION)."
  type        = string
}

variable "database_host" {
  description = "The writer endpoint: the primary region's cluster endpoint, wherever this service runs."
  type        = string
}

variable "database_port" {
  description = "PostgreSQL port."
  type        = number
  default     = 5432
}

variable "database_cidrs" {
  description = "Networks where a writer may live: every region's VPC (the peering carries the rest)."
  type        = list(string)
}

variable "database_name" {
  description = "The application database."
  type        = string
  default     = "dotshop"
}

variable "image" {
  description = "The dotshop container image (one image, every process; `dotshop <process>` picks the part)."
  type        = string
}

variable "processes" {
  description = "The processes of dotshop that run in every region. port = null for workers with no HTTP listener behind the load balancer."
  type = map(object({
    command        = list(string)
    port           = optional(number)
    health_path    = optional(string)
    host_prefix    = optional(string)
    cpu            = number
    memory         = number
    min_count      = number
    max_count      = number
    cpu_target     = optional(number, 60)
    request_target = optional(number)
  }))
}

variable "environment" {
  description = "Plain settings given to every process (DOTSHOP_* that are not secrets)."
  type        = map(string)
  default     = {}
}

variable "secret_keys" {
  description = "Keys of the region's application secret in Secrets Manager, each handed to every process as the environment variable of that name. Values are written by operators, never by Terraform (they would land in the state)."
  type        = list(string)
}

variable "vpc_id" {
  description = "The region's VPC."
  type        = string
}

variable "public_subnet_ids" {
  description = "Subnets of the load balancer."
  type        = list(string)
}

variable "private_subnet_ids" {
  description = "Subnets of the tasks."
  type        = list(string)
}

variable "kms_key_arn" {
  description = "The region's key: logs and secrets."
  type        = string
}

variable "domain" {
  description = "The storefront's DNS zone, e.g. shop.example.com; the region's load balancer answers api-<region>.<domain> and console-<region>.<domain>."
  type        = string
}

variable "zone_id" {
  description = "Route 53 hosted zone of var.domain (certificate validation)."
  type        = string
}

variable "log_retention_days" {
  description = "How long process logs are kept: a year, the window of a payment dispute."
  type        = number
  default     = 365
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
}
