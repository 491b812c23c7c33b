# One region's member of the Aurora PostgreSQL global database. Every region's cluster is
# declared the same way: which one writes is decided by the global cluster (a switchover in the
# environment root), not here, so a failover changes nothing in this module.

data "aws_partition" "current" {}

locals {
  family = "aurora-postgresql${split(".", var.engine_version)[0]}"
}

# Our settings (see core/db.py: the application sets its own statement, lock and
# idle-in-transaction timeouts per session; these are the server-side backstops).
resource "aws_rds_cluster_parameter_group" "this" {
  name_prefix = "${var.name}-"
  family      = local.family
  description = "dotshop cluster settings"

  # TLS only: card and customer data cross regions over the peering.
  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }

  # All times are UTC (DESIGN.md).
  parameter {
    name  = "timezone"
    value = "UTC"
  }

  # The relay's SKIP LOCKED claims and the reservation UPDATE must not wait behind a forgotten
  # transaction: a backstop over the application's own 60 s setting.
  parameter {
    name  = "idle_in_transaction_session_timeout"
    value = "120000"
  }

  # Lock waits over deadlock_timeout are logged: the stock row is the hot row.
  parameter {
    name  = "log_lock_waits"
    value = "1"
  }

  # Schema changes are logged; data statements are not (they carry customer data), except
  # the slow ones.
  parameter {
    name  = "log_statement"
    value = "ddl"
  }

  parameter {
    name  = "log_min_duration_statement"
    value = "500"
  }

  parameter {
    name         = "shared_preload_libraries"
    value        = "pg_stat_statements"
    apply_method = "pending-reboot"
  }

  # Connections are logged for the audit trail.
  parameter {
    name  = "log_connections"
    value = "1"
  }

  parameter {
    name  = "log_disconnections"
    value = "1"
  }

  tags = var.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_db_parameter_group" "this" {
  name_prefix = "${var.name}-"
  family      = local.family
  description = "dotshop instance settings"

  tags = var.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_db_subnet_group" "this" {
  name_prefix = "${var.name}-"
  subnet_ids  = var.subnet_ids

  tags = var.tags
}

resource "aws_security_group" "this" {
  name_prefix = "${var.name}-db-"
  description = "Aurora PostgreSQL: port 5432 from the dotshop VPCs"
  vpc_id      = var.vpc_id

  ingress {
    description = "PostgreSQL from the tasks of every region"
    from_port   = 5432
    to_port     = 5432
    protocol    = "tcp"
    cidr_blocks = var.client_cidrs
  }

  tags = merge(var.tags, { Name = "${var.name}-db" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_rds_cluster" "this" {
  #checkov:skip=CKV2_AWS_8:Aurora's continuous backup is the backup plan: 35 days of point-in-time recovery in every region of the global database. Copies to a second account are left to do (infra/terraform/README.md).
  cluster_identifier        = var.name
  global_cluster_identifier = var.global_cluster_id
  engine                    = "aurora-postgresql"
  engine_version            = var.engine_version

  # Only the first member of a global cluster may carry credentials; RDS keeps the master
  # password in Secrets Manager, encrypted with our key.
  database_name                 = var.bootstrap ? var.database_name : null
  master_username               = var.bootstrap ? "dotshop_admin" : null
  manage_master_user_password   = var.bootstrap ? true : null
  master_user_secret_kms_key_id = var.bootstrap ? var.kms_key_arn : null

  db_subnet_group_name            = aws_db_subnet_group.this.name
  vpc_security_group_ids          = [aws_security_group.this.id]
  db_cluster_parameter_group_name = aws_rds_cluster_parameter_group.this.name

  storage_encrypted                   = true
  kms_key_id                          = var.kms_key_arn
  iam_database_authentication_enabled = true
  backup_retention_period             = var.backup_retention_days
  preferred_backup_window             = "02:00-03:00"
  preferred_maintenance_window        = "sun:04:00-sun:05:00"
  copy_tags_to_snapshot               = true
  deletion_protection                 = true
  skip_final_snapshot                 = false
  final_snapshot_identifier           = "${var.name}-final"
  enabled_cloudwatch_logs_exports     = ["postgresql"]

  tags = var.tags

  lifecycle {
    # After a switchover the writer is another region's cluster: RDS rewrites the replication
    # source and the credentials belong to whichever cluster writes. None of it is ours to undo.
    ignore_changes = [
      replication_source_identifier,
      global_cluster_identifier,
      database_name,
      master_username,
      manage_master_user_password,
      master_user_secret_kms_key_id,
    ]
  }
}

data "aws_iam_policy_document" "monitoring_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["monitoring.rds.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "monitoring" {
  name_prefix        = "${var.name}-rds-mon-"
  assume_role_policy = data.aws_iam_policy_document.monitoring_assume.json

  tags = var.tags
}

resource "aws_iam_role_policy_attachment" "monitoring" {
  role       = aws_iam_role.monitoring.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

resource "aws_rds_cluster_instance" "this" {
  count = var.instance_count

  identifier                            = "${var.name}-${count.index}"
  cluster_identifier                    = aws_rds_cluster.this.id
  engine                                = aws_rds_cluster.this.engine
  engine_version                        = aws_rds_cluster.this.engine_version
  instance_class                        = var.instance_class
  db_parameter_group_name               = aws_db_parameter_group.this.name
  db_subnet_group_name                  = aws_db_subnet_group.this.name
  publicly_accessible                   = false
  auto_minor_version_upgrade            = true
  monitoring_interval                   = 30
  monitoring_role_arn                   = aws_iam_role.monitoring.arn
  performance_insights_enabled          = true
  performance_insights_kms_key_id       = var.kms_key_arn
  performance_insights_retention_period = 7
  copy_tags_to_snapshot                 = true

  tags = var.tags
}
