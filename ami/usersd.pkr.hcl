# Golden AMI for usersd: the official Debian 12 AMI + the usersd .deb + our sysctls, service enabled
# (not started), keys/logs/machine-id cleaned so every instance starts fresh.
#
#   packer build -var deb_path=dist/usersd_1.2.3_amd64.deb ami/usersd.pkr.hcl
#
# Checked with Debian 12's packer (1.6.6, amazon-ebs builder built in):
#   packer validate -syntax-only ami/usersd.pkr.hcl && packer fmt -check ami/
# Packer 1.6 does not know `required_plugins`; with Packer >= 1.7 add, inside the packer block:
#   required_plugins { amazon = { version = ">= 1.2.0", source = "github.com/hashicorp/amazon" } }
packer {
  required_version = ">= 1.6.6"
}

variable "region" {
  type        = string
  default     = "eu-west-1"
  description = "AWS region the AMI is built in (and registered in)."
}

variable "instance_type" {
  type        = string
  default     = "t3.small"
  description = "Builder instance type (amd64: the source AMI filter is debian-12-amd64-*)."
}

variable "deb_path" {
  type        = string
  description = "Path of the usersd .deb to bake in, e.g. dist/usersd_1.2.3_amd64.deb (required)."
}

variable "vpc_id" {
  type        = string
  default     = ""
  description = "Optional VPC for the builder instance (empty: the default VPC)."
}

variable "subnet_id" {
  type        = string
  default     = ""
  description = "Optional subnet for the builder instance (empty: chosen by AWS)."
}

variable "ami_name_prefix" {
  type    = string
  default = "usersd-debian-12-amd64"
}

locals {
  # AMI names allow [A-Za-z0-9()[]./-'@_ ]: no colons, hence the formatted timestamp.
  timestamp = formatdate("YYYYMMDD-hhmmss", timestamp())
}

source "amazon-ebs" "usersd" {
  region        = var.region
  instance_type = var.instance_type
  vpc_id        = var.vpc_id
  subnet_id     = var.subnet_id
  ssh_username  = "admin"
  ami_name      = "${var.ami_name_prefix}-${local.timestamp}"

  # The official Debian 12 (bookworm) AMI, published by the Debian cloud team's account.
  source_ami_filter {
    filters = {
      name                = "debian-12-amd64-*"
      architecture        = "x86_64"
      root-device-type    = "ebs"
      virtualization-type = "hvm"
    }
    owners      = ["136693071363"]
    most_recent = true
  }

  # IMDSv2-only (metadata_options / imds_support) needs the amazon plugin of Packer >= 1.7; set it on
  # the launch template instead: Debian's packer 1.6.6 rejects those arguments.

  tags = {
    Name       = "${var.ami_name_prefix}-${local.timestamp}"
    Service    = "usersd"
    BaseOS     = "debian-12"
    SourceAMI  = "{{ .SourceAMI }}"
    BuildStamp = local.timestamp
  }
}

build {
  sources = ["source.amazon-ebs.usersd"]

  provisioner "shell" {
    inline = ["mkdir -p /tmp/usersd-ami/files"]
  }

  provisioner "file" {
    source      = var.deb_path
    destination = "/tmp/usersd-ami/"
  }

  # ami/files/ (60-usersd.conf, the sysctl base) lands next to provision.sh, where it looks for it.
  provisioner "file" {
    source      = "${path.root}/files/"
    destination = "/tmp/usersd-ami/files/"
  }

  provisioner "file" {
    source      = "${path.root}/provision.sh"
    destination = "/tmp/usersd-ami/provision.sh"
  }

  provisioner "shell" {
    environment_vars = ["DEBIAN_FRONTEND=noninteractive"]
    execute_command  = "chmod +x {{ .Path }}; sudo -E sh -c '{{ .Vars }} {{ .Path }}'"
    inline = [
      "chmod 0755 /tmp/usersd-ami/provision.sh",
      "/tmp/usersd-ami/provision.sh --deb /tmp/usersd-ami/${basename(var.deb_path)}",
      "rm -rf /tmp/usersd-ami",
    ]
  }
}
