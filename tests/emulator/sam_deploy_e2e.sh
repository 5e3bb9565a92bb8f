#!/usr/bin/env bash
# infra/template.yaml on the running emulator (scripts/test.sh starts it and
# the Data API stand-in): `sam build` of the four functions with cargo-lambda
# (x86_64, because the emulator runs each bootstrap on the host; the debug
# profile, which reuses the tests' build cache), `sam deploy` to ministack's
# CloudFormation (it applies the SAM transform with aws-sam-translator), then
# tests/emulator/sam_deploy_e2e.py drops a raw file in the stack's bucket and
# a record on its stream and follows them to the lake and the warehouse.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/env.sh
use_test_lambda_builds
venv="${TVETL_VENV:-$HOME/.cache/tvetl-venv}"
sam_venv="${TVETL_SAM_VENV:-$HOME/.cache/tvetl-sam-venv}"
run_dir="${TVETL_RUN_DIR:-$HOME/.cache/tvetl-run}"
mkdir -p "$run_dir"
: "${AWS_ENDPOINT_URL:?the emulator endpoint (scripts/test.sh sets it)}"
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export SAM_CLI_TELEMETRY=0
scripts/infra-check.sh install
# cargo-lambda from the emulator's venv (zig there is for deployments), sam from its own.
export PATH="$venv/bin:$sam_venv/bin:$PATH"

build_dir="$run_dir/sam-build"
echo "== sam build (x86_64, debug profile)"
start=$(date +%s)
SAM_BUILD_MODE=debug sam build --beta-features --template infra/template.yaml --build-dir "$build_dir" \
  --parameter-overrides Architecture=x86_64 >"$run_dir/sam-build.log" 2>&1 || { tail -n 40 "$run_dir/sam-build.log"; exit 1; }
echo "sam build took $(( $(date +%s) - start )) s"

# Unique names: the emulator may hold earlier stacks, and the stand-in is shared.
suffix="$(date +%s)$$"
stack="tvetl-sam-e2e-$suffix"
project="sam${suffix: -9}"
artifacts="tvetl-sam-artifacts-$suffix"
python -c "import boto3, sys; boto3.client('s3').create_bucket(Bucket=sys.argv[1])" "$artifacts"
overrides=(
  Architecture=x86_64 ProjectName="$project" Stage=dev LogRetentionDays=7 LoadBatchingWindowSeconds=1
  EndpointUrl="$AWS_ENDPOINT_URL"
  # No Redshift Serverless in the emulator: an existing workgroup by name and
  # ARN, served by the Data API stand-in.
  ExistingRedshiftWorkgroupName=standin
  ExistingRedshiftWorkgroupArn=arn:aws:redshift-serverless:us-east-1:000000000000:workgroup/00000000-0000-0000-0000-000000000000
)
if [ -n "${AWS_ENDPOINT_URL_REDSHIFT_DATA:-}" ]; then
  overrides+=(RedshiftDataEndpointUrl="$AWS_ENDPOINT_URL_REDSHIFT_DATA")
fi
echo "== sam deploy $stack to $AWS_ENDPOINT_URL"
start=$(date +%s)
sam deploy --template-file "$build_dir/template.yaml" --stack-name "$stack" --s3-bucket "$artifacts" \
  --region us-east-1 --capabilities CAPABILITY_IAM --no-confirm-changeset --no-fail-on-empty-changeset \
  --parameter-overrides "${overrides[@]}" >"$run_dir/sam-deploy.log" 2>&1 || { tail -n 40 "$run_dir/sam-deploy.log"; exit 1; }
echo "sam deploy took $(( $(date +%s) - start )) s"

python tests/emulator/sam_deploy_e2e.py "$stack"
