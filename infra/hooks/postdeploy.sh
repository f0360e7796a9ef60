#!/usr/bin/env bash
# azd postdeploy hook (azure.yaml): publish the page with a config.js naming the API, then the
# smoke test. azd runs it with its environment (the outputs of infra/main.bicep:
# SERVICE_APP_URI, AZURE_WEB_STORAGE_ACCOUNT_NAME, SITE_URL, SITE_ORIGIN,
# STATIC_WEBSITE_BY_SCRIPT) and from this directory; the steps are the same scripts
# infra/deploy.sh runs.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

"$HERE/../scripts/publish-site.sh"
"$HERE/../scripts/smoke-test.sh"
