variable "dashboards_dir" {
  description = "Folder of the Grafana dashboards (dashboards/grafana): every *.json in it, read in place, never copied."
  type        = string
}

variable "prometheus" {
  description = "Per region key, its Prometheus workspace: the dashboards' `datasource` variable offers one data source per region."
  type = map(object({
    aws_region = string
    endpoint   = string
  }))
}
