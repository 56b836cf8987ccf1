#!/usr/bin/env bash
# Let GitHub Actions of one repository deploy as <service>-deployer through Workload Identity
# Federation: no key file exists anywhere. Prints the two values deploy.yml needs.
# shellcheck source=deploy/lib.sh source-path=SCRIPTDIR/..
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_flags "$@"
[ -n "$GITHUB_REPO" ] || die "--github-repo OWNER/NAME is required (or FERRY_GITHUB_REPO)"
need gcloud

lookup PROJECT_NUMBER gcloud projects describe "$PROJECT" --format=value\(projectNumber\)
POOL=github
ensure gcloud iam workload-identity-pools describe "$POOL" --project="$PROJECT" --location=global -- \
  gcloud iam workload-identity-pools create "$POOL" --project="$PROJECT" --location=global --display-name="GitHub Actions"
ensure gcloud iam workload-identity-pools providers describe github-oidc --project="$PROJECT" --location=global --workload-identity-pool="$POOL" -- \
  gcloud iam workload-identity-pools providers create-oidc github-oidc --project="$PROJECT" --location=global \
  --workload-identity-pool="$POOL" --issuer-uri=https://token.actions.githubusercontent.com \
  --attribute-mapping=google.subject=assertion.sub,attribute.repository=assertion.repository,attribute.ref=assertion.ref \
  --attribute-condition="assertion.repository == '${GITHUB_REPO}' && assertion.ref == 'refs/heads/main'"
run gcloud iam service-accounts add-iam-policy-binding "$DEPLOYER_SA" --project="$PROJECT" \
  --role=roles/iam.workloadIdentityUser --condition=None --quiet \
  --member="principalSet://iam.googleapis.com/projects/${PROJECT_NUMBER}/locations/global/workloadIdentityPools/${POOL}/attribute.repository/${GITHUB_REPO}"
echo "# repository variables for .github/workflows/deploy.yml:"
echo "#   GCP_WORKLOAD_IDENTITY_PROVIDER=projects/${PROJECT_NUMBER}/locations/global/workloadIdentityPools/${POOL}/providers/github-oidc"
echo "#   GCP_SERVICE_ACCOUNT=${DEPLOYER_SA}"
