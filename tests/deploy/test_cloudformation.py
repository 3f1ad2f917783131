"""The CloudFormation template (deploy/cloudformation/usersd.yaml): cfn-lint finds no error, and the
template keeps the timing contract with usersd's production config (etc/usersd.json) and holds no secret.

Run: build/venv/bin/python -m pytest -q tests/deploy
cfn-lint (pinned in tests/integration/requirements.txt) comes from build/venv; CFN_LINT=/path/to/cfn-lint
overrides.
A missing cfn-lint fails the run (never a skip): a template nobody linted must not look green.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "deploy" / "cloudformation" / "usersd.yaml"
CONFIG = REPO / "etc" / "usersd.json"


# --- helpers ------------------------------------------------------------------------------------

def find_cfn_lint():
    candidates = []
    if os.environ.get("CFN_LINT"):
        candidates.append(Path(os.environ["CFN_LINT"]))
    candidates.append(Path(sys.executable).parent / "cfn-lint")  # the venv running pytest
    candidates.append(REPO / "build" / "venv" / "bin" / "cfn-lint")
    on_path = shutil.which("cfn-lint")
    if on_path:
        candidates.append(Path(on_path))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    pytest.fail(
        "cfn-lint is not installed (looked at $CFN_LINT, next to %s, build/venv/bin, $PATH): "
        "install it with `make venv` (cfn-lint is pinned in tests/integration/requirements.txt)" % sys.executable
    )


def run_cfn_lint(path):
    proc = subprocess.run(
        [find_cfn_lint(), "--format", "parseable", "--", str(path)],
        capture_output=True, text=True, timeout=300,
    )
    # parseable: file:line:col:endline:endcol:RULE:message
    findings = [line for line in proc.stdout.splitlines() if line.strip()]
    errors = [f for f in findings if re.search(r":E\d{4}:", f)]
    warns = [f for f in findings if re.search(r":W\d{4}:", f)]
    return proc, errors, warns


def strip_json_comments(text):
    """etc/usersd.json is JSON with // comments: drop them (outside strings) and parse."""
    out, i, in_str = [], 0, False
    while i < len(text):
        ch = text[i]
        if in_str:
            out.append(ch)
            if ch == "\\" and i + 1 < len(text):
                out.append(text[i + 1])
                i += 1
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
            out.append(ch)
        elif text.startswith("//", i):
            while i < len(text) and text[i] != "\n":
                i += 1
            continue
        else:
            out.append(ch)
        i += 1
    return json.loads("".join(out))


def load_template():
    """YAML with CloudFormation's short tags (!Ref, !Sub, !If ...) turned into their long form."""
    try:
        import yaml
    except ImportError:
        pytest.fail("PyYAML is missing (it comes with cfn-lint: `make venv`)")

    class CfnLoader(yaml.SafeLoader):
        pass

    def construct(loader, tag_suffix, node):
        name = "Ref" if tag_suffix == "Ref" else "Fn::" + tag_suffix
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
            if tag_suffix == "GetAtt":
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {name: value}

    CfnLoader.add_multi_constructor("!", construct)
    return yaml.load(TEMPLATE.read_text(), Loader=CfnLoader)


@pytest.fixture(scope="module")
def template():
    return load_template()


@pytest.fixture(scope="module")
def config():
    return strip_json_comments(CONFIG.read_text())


def resources_of_type(template, type_name):
    return {k: v for k, v in template["Resources"].items() if v["Type"] == type_name}


def one(template, type_name):
    found = resources_of_type(template, type_name)
    assert len(found) == 1, "expected one %s, found %s" % (type_name, sorted(found))
    return next(iter(found.values()))["Properties"]


def attributes(props, key):
    return {a["Key"]: a["Value"] for a in props.get(key, [])}


def walk(node):
    yield node
    if isinstance(node, dict):
        for v in node.values():
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


# --- cfn-lint ------------------------------------------------------------------------------------

def test_cfn_lint_reports_no_errors():
    proc, errors, warns = run_cfn_lint(TEMPLATE)
    for w in warns:
        warnings.warn("cfn-lint: " + w)
    assert proc.returncode & 1 == 0, "cfn-lint could not run:\n%s%s" % (proc.stdout, proc.stderr)
    assert not errors and proc.returncode & 2 == 0, "cfn-lint errors:\n" + "\n".join(errors or [proc.stdout])


def test_cfn_lint_would_catch_an_error(tmp_path):
    # The lint above passing means something only if this cfn-lint actually checks resources.
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "AWSTemplateFormatVersion: '2010-09-09'\n"
        "Resources:\n"
        "  TargetGroup:\n"
        "    Type: AWS::ElasticLoadBalancingV2::TargetGroup\n"
        "    Properties:\n"
        "      HealthCheckIntervalSeconds: five\n"
        "      NoSuchProperty: true\n"
    )
    proc, errors, _ = run_cfn_lint(broken)
    assert errors and proc.returncode & 2, "cfn-lint accepted a broken template:\n" + proc.stdout + proc.stderr


# --- the timing contract with etc/usersd.json ----------------------------------------------------

def test_target_group_health_check_is_explicit_and_matches_usersd(template, config):
    tg = one(template, "AWS::ElasticLoadBalancingV2::TargetGroup")
    assert tg["HealthCheckPath"] == "/healthcheck"
    assert str(tg["Matcher"]["HttpCode"]) == "200"
    assert tg["Protocol"] == "HTTP"
    assert int(tg["Port"]) == config["http"]["port"]
    assert tg["HealthCheckPort"] == "traffic-port"
    for key in ("HealthCheckIntervalSeconds", "HealthCheckTimeoutSeconds", "HealthyThresholdCount",
                "UnhealthyThresholdCount"):
        assert isinstance(tg[key], int), "%s must be explicit" % key
    assert tg["HealthCheckTimeoutSeconds"] < tg["HealthCheckIntervalSeconds"]


def test_health_check_marks_a_draining_target_unhealthy_within_drain_delay(template, config):
    # After SIGTERM /healthcheck answers 503 for drain_delay while requests are still served; the ALB
    # must stop routing before the listeners close: worst case `unhealthy` failed checks, the first
    # up to one interval away, each allowed its timeout.
    tg = one(template, "AWS::ElasticLoadBalancingV2::TargetGroup")
    drain = config["drain_delay"]
    detect = tg["HealthCheckIntervalSeconds"] * tg["UnhealthyThresholdCount"] + tg["HealthCheckTimeoutSeconds"]
    assert drain > 0, "etc/usersd.json must set drain_delay for a load-balanced fleet"
    assert tg["HealthCheckIntervalSeconds"] * tg["UnhealthyThresholdCount"] <= drain
    assert detect <= drain, "health check detection %d s > drain_delay %d s" % (detect, drain)


def test_deregistration_delay_covers_drain_and_graceful_timeout(template, config):
    tg = one(template, "AWS::ElasticLoadBalancingV2::TargetGroup")
    delay = int(attributes(tg, "TargetGroupAttributes")["deregistration_delay.timeout_seconds"])
    needed = config["drain_delay"] + config["graceful_timeout"]
    assert delay >= needed, "deregistration delay %d s < drain_delay + graceful_timeout = %d s" % (delay, needed)


def test_alb_idle_timeout_is_below_usersd_keep_alive(template, config):
    lb = one(template, "AWS::ElasticLoadBalancingV2::LoadBalancer")
    idle = int(attributes(lb, "LoadBalancerAttributes")["idle_timeout.timeout_seconds"])
    keep_alive = config["http"]["keep_alive_timeout"]
    assert idle < keep_alive, "ALB idle timeout %d s must be below usersd keep_alive_timeout %d s" % (idle, keep_alive)


def test_usersd_listens_where_the_alb_sends(config):
    assert config["http"]["bind"] == "0.0.0.0", "the ALB reaches instances on their VPC address"


# --- wiring ---------------------------------------------------------------------------------------

def test_instances_accept_usersd_port_from_the_alb_only(template, config):
    port = config["http"]["port"]
    rules = [r["Properties"] for r in resources_of_type(template, "AWS::EC2::SecurityGroupIngress").values()]
    sg = template["Resources"]["InstanceSecurityGroup"]["Properties"]
    rules += sg.get("SecurityGroupIngress", [])
    assert rules, "no ingress rule for the instances"
    for r in rules:
        if r.get("GroupId") not in (None, {"Ref": "InstanceSecurityGroup"}):
            continue
        assert (r["FromPort"], r["ToPort"]) == (port, port)
        assert r["SourceSecurityGroupId"] == {"Ref": "LoadBalancerSecurityGroup"}
        assert "CidrIp" not in r


def test_auto_scaling_group_spans_three_private_subnets_behind_the_alb(template):
    asg = one(template, "AWS::AutoScaling::AutoScalingGroup")
    assert asg["VPCZoneIdentifier"] == [{"Ref": "PrivateSubnet%d" % i} for i in (1, 2, 3)]
    azs = [template["Resources"]["PrivateSubnet%d" % i]["Properties"]["AvailabilityZone"] for i in (1, 2, 3)]
    assert azs == [{"Fn::Select": [i, {"Fn::GetAZs": ""}]} for i in range(3)]
    assert asg["TargetGroupARNs"] == [{"Ref": "TargetGroup"}]
    assert asg["HealthCheckType"] == "ELB"
    policy = one(template, "AWS::AutoScaling::ScalingPolicy")
    assert policy["PolicyType"] == "TargetTrackingScaling"
    assert policy["TargetTrackingConfiguration"]["PredefinedMetricSpecification"]["PredefinedMetricType"] \
        == "ASGAverageCPUUtilization"


def test_launch_template_uses_the_golden_ami_imdsv2_and_encrypted_volumes(template):
    assert template["Parameters"]["AmiId"]["Type"] == "AWS::EC2::Image::Id"
    data = one(template, "AWS::EC2::LaunchTemplate")["LaunchTemplateData"]
    assert data["ImageId"] == {"Ref": "AmiId"}
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert all(m["Ebs"]["Encrypted"] is True for m in data["BlockDeviceMappings"])
    user_data = json.dumps(data["UserData"])
    for needle in ("/etc/usersd/usersd.env", "USERSD_STORAGE_URL=", "USERSD_JWT_SECRET=",
                   "${MongoUrlParameterName}", "${JwtSecretParameterName}", "--with-decryption"):
        assert needle in user_data, needle


def test_codedeploy_deploys_in_place_with_traffic_control_through_the_target_group(template):
    dg = one(template, "AWS::CodeDeploy::DeploymentGroup")
    assert dg["DeploymentStyle"] == {"DeploymentType": "IN_PLACE", "DeploymentOption": "WITH_TRAFFIC_CONTROL"}
    assert dg["LoadBalancerInfo"]["TargetGroupInfoList"] == [{"Name": {"Fn::GetAtt": ["TargetGroup", "TargetGroupName"]}}]
    assert dg["AutoScalingGroups"] == [{"Ref": "AutoScalingGroup"}]
    role = template["Resources"]["CodeDeployServiceRole"]["Properties"]
    assert role["ManagedPolicyArns"] == [{"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/AWSCodeDeployRole"}]


def test_alarms_watch_unhealthy_hosts_and_5xx(template):
    metrics = {a["Properties"]["MetricName"] for a in resources_of_type(template, "AWS::CloudWatch::Alarm").values()}
    assert {"UnHealthyHostCount", "HTTPCode_Target_5XX_Count", "HTTPCode_ELB_5XX_Count"} <= metrics


def test_https_is_conditional_on_a_certificate(template):
    assert template["Resources"]["HttpsListener"]["Condition"] == "HasCertificate"
    https = template["Resources"]["HttpsListener"]["Properties"]
    assert https["Port"] == 443 and https["Certificates"] == [{"CertificateArn": {"Ref": "CertificateArn"}}]
    assert template["Parameters"]["CertificateArn"]["Default"] == ""


def test_outputs(template):
    assert {"LoadBalancerDnsName", "TargetGroupArn", "CodeDeployApplicationName",
            "CodeDeployDeploymentGroupName"} <= set(template["Outputs"])


# --- least privilege and secrets -----------------------------------------------------------------

def test_instance_role_reads_exactly_the_two_secret_parameters(template):
    role = template["Resources"]["InstanceRole"]["Properties"]
    assert "ManagedPolicyArns" not in role, "managed policies (e.g. AmazonSSMManagedInstanceCore) grant too much"
    statements = [s for s in walk(role["Policies"]) if isinstance(s, dict) and "Effect" in s]
    ssm = [s for s in statements if any(str(a).startswith("ssm:GetParameter") for a in _list(s["Action"]))]
    assert len(ssm) == 1
    assert sorted(_list(ssm[0]["Action"])) == ["ssm:GetParameter", "ssm:GetParameters"]
    assert ssm[0]["Resource"] == [
        {"Fn::Sub": "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter${MongoUrlParameterName}"},
        {"Fn::Sub": "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter${JwtSecretParameterName}"},
    ]
    kms = [s for s in statements if "kms:Decrypt" in _list(s["Action"])]
    assert len(kms) == 1 and "kms:ViaService" in kms[0]["Condition"]["StringEquals"]
    s3 = [s for s in statements if any(str(a).startswith("s3:") for a in _list(s["Action"]))]
    assert len(s3) == 1 and s3[0]["Resource"] == {"Fn::Sub": "arn:${AWS::Partition}:s3:::${ArtifactBucketName}/*"}
    for s in statements:
        assert s["Effect"] == "Allow"
        for action in _list(s["Action"]):
            assert "*" not in action, "wildcard action %s" % action
        if s["Resource"] == "*":  # only actions that have no resource-level permissions
            assert all(a.split(":")[0] in ("cloudwatch", "ssmmessages", "ec2messages") or
                       a == "ssm:UpdateInstanceInformation" for a in _list(s["Action"])), s


def _list(v):
    return v if isinstance(v, list) else [v]


SECRET_PATTERNS = [
    (re.compile(r"mongodb(\+srv)?://[^\s/@:'\"]+:[^\s@'\"]+@"), "a MongoDB URL with a password"),
    (re.compile(r"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\."), "a JWT"),
    (re.compile(r"(?i)(jwt[_-]?secret|password|secret_key)\s*[:=]\s*['\"]?[A-Za-z0-9+/=_-]{16,}"), "a secret value"),
    (re.compile(r"AKIA[0-9A-Z]{16}"), "an AWS access key"),
]


def test_no_secret_in_the_template(template):
    text = TEMPLATE.read_text()
    for pattern, what in SECRET_PATTERNS:
        match = pattern.search(text)
        assert not match, "the template holds %s: %r" % (what, match.group(0))
    # The secrets are named, never given: their parameters are SSM paths, and nothing stores a value.
    for name in ("MongoUrlParameterName", "JwtSecretParameterName"):
        p = template["Parameters"][name]
        assert p["Type"] == "String" and p["Default"].startswith("/"), name
    assert not resources_of_type(template, "AWS::SSM::Parameter")
    assert not resources_of_type(template, "AWS::SecretsManager::Secret")
    for node in walk(template):
        if isinstance(node, str):
            assert "{{resolve:" not in node, "dynamic references put secret values into resource properties"


def test_secret_patterns_catch_what_they_should():
    assert SECRET_PATTERNS[0][0].search("USERSD_STORAGE_URL=mongodb+srv://app:hunter22@cluster0.x.mongodb.net/u")
    assert SECRET_PATTERNS[2][0].search("jwt_secret: 'c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0'")
    assert not SECRET_PATTERNS[0][0].search("mongodb+srv://cluster0.x.mongodb.net/usersd")
