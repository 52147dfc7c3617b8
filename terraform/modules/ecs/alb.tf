# Internet-facing HTTPS load balancer in front of the API tasks.

resource "aws_security_group" "alb" {
  #checkov:skip=CKV_AWS_260:The public API is meant to be reachable on 80 (redirected to 443) from var.allowed_cidrs, which may be the internet.
  name_prefix = "${var.name}-alb-"
  description = "Load balancer of the streamrec API"
  vpc_id      = var.vpc_id
  tags        = var.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "alb" {
  for_each          = { for pair in setproduct(var.allowed_cidrs, [80, 443]) : "${pair[0]}-${pair[1]}" => pair }
  security_group_id = aws_security_group.alb.id
  cidr_ipv4         = each.value[0]
  ip_protocol       = "tcp"
  from_port         = each.value[1]
  to_port           = each.value[1]
  description       = each.value[1] == 80 ? "HTTP (redirected to HTTPS)" : "HTTPS API clients"
}

resource "aws_vpc_security_group_egress_rule" "alb_to_tasks" {
  security_group_id            = aws_security_group.alb.id
  referenced_security_group_id = aws_security_group.tasks.id
  ip_protocol                  = "tcp"
  from_port                    = local.api_port
  to_port                      = local.api_port
  description                  = "To the API tasks"
}

resource "aws_lb" "api" {
  #checkov:skip=CKV2_AWS_28:WAF rules depend on the deployment's clients and threat model; attach a web ACL with aws_wafv2_web_acl_association outside this module.
  #checkov:skip=CKV_AWS_91:Access logs are enabled below when var.alb_access_log_bucket is set (that bucket needs an ELB delivery policy owned by the account).
  name                       = substr("${var.name}-api", 0, 32)
  load_balancer_type         = "application"
  internal                   = false
  subnets                    = var.public_subnet_ids
  security_groups            = [aws_security_group.alb.id]
  drop_invalid_header_fields = true
  enable_deletion_protection = var.alb_deletion_protection
  tags                       = var.tags

  dynamic "access_logs" {
    for_each = var.alb_access_log_bucket == "" ? [] : [var.alb_access_log_bucket]
    content {
      bucket  = access_logs.value
      prefix  = "alb/${var.name}"
      enabled = true
    }
  }
}

resource "aws_lb_target_group" "api" {
  name_prefix          = "api-"
  port                 = local.api_port
  protocol             = "HTTP"
  target_type          = "ip"
  vpc_id               = var.vpc_id
  deregistration_delay = 15 # requests are short (50 ms budget); don't hold deploys
  tags                 = var.tags

  health_check {
    # /readyz: a model is loaded and Redis answers; /healthz would route to cold tasks.
    path                = "/readyz"
    matcher             = "200"
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.api.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.api.arn
  }
}

resource "aws_lb_listener" "http_redirect" {
  load_balancer_arn = aws_lb.api.arn
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
}
