# One region's processes: ECS Fargate services for api, relay, sync, checks and console, the
# HTTP ones behind one ALB, scaled on CPU (and the API on requests per target), configured by
# environment like `dotshop <process>` on a laptop, secrets from Secrets Manager, logs to
# CloudWatch.

data "aws_region" "current" {}

data "aws_partition" "current" {}

locals {
  # What a failover changes is here and nowhere else: DOTSHOP_PRIMARY_REGION and the host
  # DATABASE_URL is built from (see `entrypoint`).
  environment = merge(var.environment, {
    DOTSHOP_REGION         = var.region_key
    DOTSHOP_PRIMARY_REGION = var.primary_region
    DATABASE_HOST          = var.database_host
    DATABASE_PORT          = tostring(var.database_port)
    DATABASE_NAME          = var.database_name
    # The root filesystem is read-only; dotshop's home (.dotshop) and Streamlit's go to /tmp.
    DOTSHOP_HOME = "/tmp/dotshop"
    HOME         = "/tmp"
  })

  # dotshop reads one DATABASE_URL; ECS cannot splice a secret into a string, so the entry
  # point assembles it from the writer host (plain, follows primary_region) and the
  # credentials (secrets), then execs the process. Passwords are generated without
  # punctuation, so they need no URL quoting (infra/terraform/README.md).
  entrypoint = [
    "/bin/sh",
    "-c",
    "export DATABASE_URL=\"postgresql+psycopg://$${DATABASE_USER}:$${DATABASE_PASSWORD}@$${DATABASE_HOST}:$${DATABASE_PORT}/$${DATABASE_NAME}?sslmode=require\" && exec \"$@\"",
    "dotshop-entrypoint",
  ]

  web = { for name, p in var.processes : name => p if p.port != null }
}

resource "aws_secretsmanager_secret" "app" {
  #checkov:skip=CKV2_AWS_57:Stripe and Shopify keys cannot be rotated by a Lambda; operators rotate them at the provider and write the new values here (runbook in infra/terraform/README.md).
  name_prefix             = "${var.name}/app-"
  description             = "dotshop ${var.region_key}: ${join(", ", var.secret_keys)}"
  kms_key_id              = var.kms_key_arn
  recovery_window_in_days = 30

  tags = var.tags
}

resource "aws_cloudwatch_log_group" "this" {
  name              = "/dotshop/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn

  tags = var.tags
}

resource "aws_ecs_cluster" "this" {
  name = var.name

  setting {
    name  = "containerInsights"
    value = "enabled"
  }

  tags = var.tags
}

# --- roles ----------------------------------------------------------------------------------

data "aws_iam_policy_document" "ecs_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

# The execution role pulls the image, writes logs and reads the one secret; the processes
# themselves run as the task role, which can do nothing on AWS (they talk to PostgreSQL,
# Stripe and Shopify only).
resource "aws_iam_role" "execution" {
  name_prefix        = "${var.name}-exec-"
  assume_role_policy = data.aws_iam_policy_document.ecs_assume.json

  tags = var.tags
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

data "aws_iam_policy_document" "execution_secrets" {
  statement {
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_secretsmanager_secret.app.arn]
  }

  statement {
    actions   = ["kms:Decrypt"]
    resources = [var.kms_key_arn]
  }
}

resource "aws_iam_role_policy" "execution_secrets" {
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution_secrets.json
}

resource "aws_iam_role" "task" {
  name_prefix        = "${var.name}-task-"
  assume_role_policy = data.aws_iam_policy_document.ecs_assume.json

  tags = var.tags
}

# --- tasks ----------------------------------------------------------------------------------

resource "aws_ecs_task_definition" "this" {
  for_each = var.processes

  family                   = "${var.name}-${each.key}"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = each.value.cpu
  memory                   = each.value.memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "ARM64"
  }

  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([{
    name                   = each.key
    image                  = var.image
    essential              = true
    entryPoint             = local.entrypoint
    command                = each.value.command
    readonlyRootFilesystem = true
    mountPoints            = [{ sourceVolume = "tmp", containerPath = "/tmp", readOnly = false }]
    portMappings           = each.value.port == null ? [] : [{ containerPort = each.value.port, protocol = "tcp" }]
    environment            = [for k in sort(keys(local.environment)) : { name = k, value = local.environment[k] }]
    secrets                = [for k in var.secret_keys : { name = k, valueFrom = "${aws_secretsmanager_secret.app.arn}:${k}::" }]
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.this.name
        awslogs-region        = data.aws_region.current.name
        awslogs-stream-prefix = each.key
      }
    }
  }])

  tags = var.tags
}

# --- load balancer --------------------------------------------------------------------------

resource "aws_security_group" "alb" {
  #checkov:skip=CKV_AWS_260:Port 80 only answers a redirect to HTTPS (aws_lb_listener.http).
  name_prefix = "${var.name}-alb-"
  description = "Load balancer: HTTPS from CloudFront and webhook senders"
  vpc_id      = var.vpc_id

  ingress {
    description = "HTTPS"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  ingress {
    description = "HTTP, redirected to HTTPS"
    from_port   = 80
    to_port     = 80
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  egress {
    description = "To the tasks"
    from_port   = 0
    to_port     = 65535
    protocol    = "tcp"
    cidr_blocks = [data.aws_vpc.this.cidr_block]
  }

  tags = merge(var.tags, { Name = "${var.name}-alb" })

  lifecycle {
    create_before_destroy = true
  }
}

data "aws_vpc" "this" {
  id = var.vpc_id
}

resource "aws_security_group" "tasks" {
  #checkov:skip=CKV_AWS_382:Tasks call Stripe and Shopify on HTTPS at addresses nobody publishes, and PostgreSQL in the other region over the peering; egress is HTTPS anywhere plus 5432 inside our networks.
  name_prefix = "${var.name}-tasks-"
  description = "dotshop processes: their ports from the load balancer"
  vpc_id      = var.vpc_id

  dynamic "ingress" {
    for_each = local.web
    content {
      description     = "${ingress.key} from the load balancer"
      from_port       = ingress.value.port
      to_port         = ingress.value.port
      protocol        = "tcp"
      security_groups = [aws_security_group.alb.id]
    }
  }

  egress {
    description = "HTTPS: Stripe, Shopify, AWS endpoints"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  egress {
    description = "PostgreSQL (the writer may be in the other region)"
    from_port   = var.database_port
    to_port     = var.database_port
    protocol    = "tcp"
    cidr_blocks = var.database_cidrs
  }

  tags = merge(var.tags, { Name = "${var.name}-tasks" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_lb" "this" {
  #checkov:skip=CKV_AWS_91:Requests are logged by the API itself (JSON logs with request id) and, through CloudFront, by the firewall; an access-log bucket per region is left to do (infra/terraform/README.md).
  #checkov:skip=CKV2_AWS_28:The web application firewall sits on the CloudFront distributions (modules/edge); webhooks from Stripe and Shopify come here directly and are authenticated by their signatures.
  name                       = substr(replace(var.name, "_", "-"), 0, 32)
  load_balancer_type         = "application"
  internal                   = false
  subnets                    = var.public_subnet_ids
  security_groups            = [aws_security_group.alb.id]
  drop_invalid_header_fields = true
  enable_deletion_protection = true

  tags = var.tags
}

resource "aws_acm_certificate" "this" {
  domain_name               = "api-${var.region_key}.${var.domain}"
  subject_alternative_names = ["console-${var.region_key}.${var.domain}"]
  validation_method         = "DNS"

  tags = var.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_route53_record" "validation" {
  for_each = {
    for o in aws_acm_certificate.this.domain_validation_options : o.domain_name => o
  }

  zone_id         = var.zone_id
  name            = each.value.resource_record_name
  type            = each.value.resource_record_type
  records         = [each.value.resource_record_value]
  ttl             = 300
  allow_overwrite = true
}

resource "aws_acm_certificate_validation" "this" {
  certificate_arn         = aws_acm_certificate.this.arn
  validation_record_fqdns = [for r in aws_route53_record.validation : r.fqdn]
}

resource "aws_lb_target_group" "this" {
  #checkov:skip=CKV_AWS_378:TLS ends at the load balancer; from there to the task is inside the VPC, between two security groups.
  for_each = local.web

  name_prefix          = substr(each.key, 0, 6)
  port                 = each.value.port
  protocol             = "HTTP"
  target_type          = "ip"
  vpc_id               = var.vpc_id
  deregistration_delay = 30

  health_check {
    path                = each.value.health_path
    matcher             = "200"
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }

  tags = var.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.this.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = aws_acm_certificate_validation.this.certificate_arn

  default_action {
    type = "fixed-response"
    fixed_response {
      content_type = "application/json"
      message_body = "{\"error\": {\"code\": \"not_found\", \"message\": \"unknown host\"}}"
      status_code  = "404"
    }
  }

  tags = var.tags
}

resource "aws_lb_listener" "http" {
  #checkov:skip=CKV_AWS_2:This listener only redirects to HTTPS.
  #checkov:skip=CKV_AWS_103:This listener only redirects to HTTPS.
  load_balancer_arn = aws_lb.this.arn
  port              = 80
  protocol          = "HTTP"

  default_action {
    type = "redirect"
    redirect {
      port        = "443"
      protocol    = "HTTPS"
      status_code = "HTTP_301"
    }
  }

  tags = var.tags
}

# Each web process answers on its own host name: api-us.<domain>, console-us.<domain>.
resource "aws_lb_listener_rule" "this" {
  for_each = local.web

  listener_arn = aws_lb_listener.https.arn
  priority     = 100 + index(sort(keys(local.web)), each.key)

  condition {
    host_header {
      values = ["${each.value.host_prefix}-${var.region_key}.${var.domain}"]
    }
  }

  action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.this[each.key].arn
  }

  tags = var.tags
}

# --- services and scaling -------------------------------------------------------------------

resource "aws_ecs_service" "this" {
  for_each = var.processes

  name                               = each.key
  cluster                            = aws_ecs_cluster.this.id
  task_definition                    = aws_ecs_task_definition.this[each.key].arn
  desired_count                      = each.value.min_count
  launch_type                        = "FARGATE"
  platform_version                   = "LATEST"
  propagate_tags                     = "SERVICE"
  enable_ecs_managed_tags            = true
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  health_check_grace_period_seconds  = each.value.port == null ? null : 30

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.tasks.id]
    assign_public_ip = false
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  dynamic "load_balancer" {
    for_each = each.value.port == null ? [] : [each.value.port]
    content {
      target_group_arn = aws_lb_target_group.this[each.key].arn
      container_name   = each.key
      container_port   = load_balancer.value
    }
  }

  tags = var.tags

  lifecycle {
    # The autoscaler owns the running count.
    ignore_changes = [desired_count]
  }

  depends_on = [aws_lb_listener_rule.this]
}

resource "aws_appautoscaling_target" "this" {
  for_each = var.processes

  service_namespace  = "ecs"
  resource_id        = "service/${aws_ecs_cluster.this.name}/${aws_ecs_service.this[each.key].name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = each.value.min_count
  max_capacity       = each.value.max_count

  tags = var.tags
}

resource "aws_appautoscaling_policy" "cpu" {
  for_each = var.processes

  name               = "${var.name}-${each.key}-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.this[each.key].service_namespace
  resource_id        = aws_appautoscaling_target.this[each.key].resource_id
  scalable_dimension = aws_appautoscaling_target.this[each.key].scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = each.value.cpu_target
    scale_in_cooldown  = 300
    scale_out_cooldown = 60

    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}

resource "aws_appautoscaling_policy" "requests" {
  for_each = { for name, p in local.web : name => p if p.request_target != null }

  name               = "${var.name}-${each.key}-requests"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.this[each.key].service_namespace
  resource_id        = aws_appautoscaling_target.this[each.key].resource_id
  scalable_dimension = aws_appautoscaling_target.this[each.key].scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = each.value.request_target
    scale_in_cooldown  = 300
    scale_out_cooldown = 60

    predefined_metric_specification {
      predefined_metric_type = "ALBRequestCountPerTarget"
      resource_label         = "${aws_lb.this.arn_suffix}/${aws_lb_target_group.this[each.key].arn_suffix}"
    }
  }
}
