variable "name" {
  description = "Prefix of every name, e.g. dotshop-prod-us."
  type        = string
}

variable "global_cluster_id" {
  description = "The Aurora global cluster this region's cluster belongs to."
  type        = string
}

variable "engine_version" {
  description = "Aurora PostgreSQL version; the same in every region of a global database."
  type        = string
}

variable "bootstrap" {
  description = "True for the one region whose cluster created the global database: Aurora lets only the first member of a global cluster carry the master credentials. Creation-time only (ignored afterwards): which region writes is the environment's primary_region, applied by a switchover."
  type        = bool
}

variable "instance_count" {
  description = "Cluster instances. At least one in every region: a headless secondary cannot take over the writer without waiting for an instance."
  type        = number
  default     = 2

  validation {
    condition     = var.instance_count >= 1
    error_message = "Every region keeps at least one instance, so a switchover has somewhere to go."
  }
}

variable "instance_class" {
  description = "Instance class of every cluster instance."
  type        = string
  default     = "db.r6g.large"
}

variable "database_name" {
  description = "The application database (created with the cluster, replicated to the secondaries)."
  type        = string
  default     = "dotshop"
}

variable "vpc_id" {
  description = "The region's VPC."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets over three zones."
  type        = list(string)
}

variable "client_cidrs" {
  description = "Networks whose tasks reach PostgreSQL: every region's VPC, since services write to the primary region's writer over the peering."
  type        = list(string)
}

variable "kms_key_arn" {
  description = "The region's key: storage, Performance Insights."
  type        = string
}

variable "backup_retention_days" {
  description = "Automated backups (point-in-time recovery window). 35 days, Aurora's maximum: a payment dispute or a reconciliation question can come weeks later."
  type        = number
  default     = 35
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
}
