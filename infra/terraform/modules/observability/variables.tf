variable "name" {
  description = "Prefix of every name, e.g. dotshop-prod-us."
  type        = string
}

variable "rules_dir" {
  description = "Folder of the Prometheus rule files (dashboards/prometheus): every *.rules.yml in it becomes a rule group namespace, read in place, never copied."
  type        = string
}

variable "kms_key_arn" {
  description = "The region's key: workspace, alert topic, logs."
  type        = string
}

variable "log_retention_days" {
  description = "Rule and alert manager logs: a year, like every other log of ours."
  type        = number
  default     = 365
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
}
