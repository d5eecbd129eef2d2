#!/bin/sh
test_description='a CI job with only stock git and git-model commands (contrib/ci/model-ci.sh)'
. "${GM_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}/t/test-lib.sh"
. "$GM_SRC_DIR/t/lib-hub.sh"

MODELS="$HOME/.local/share/git-model/models"

test_expect_success PYTHON3 'the CI script clones, checks, runs and publishes a model' '
	start_hub_server &&
	git model synth -q tiny m &&
	git model import -q m upload &&
	hub_repo org/tiny &&
	git -C "$HUB_ROOT/org/tiny.git" config http.receivepack true &&
	git -C "$MODELS/upload" remote add origin "$HUB_URL/org/tiny" &&
	git model push -q upload &&
	mkdir job && (
		cd job &&
		MODEL=hf:org/tiny PUSH=1 sh "$GM_SRC_DIR/contrib/ci/model-ci.sh" >../out 2>../err
	) &&
	test_grep "^checked 2 LFS objects, 0 problems\$" out &&
	test_grep "^ok" out &&
	test_grep "^smoke test: [0-9]* bytes generated\$" out &&
	test_grep "^pushed [0-9a-f]*\$" out &&
	git -C "$HUB_ROOT/org/tiny.git" show main:ci/smoke.txt >pushed &&
	test_cmp job/smoke.txt pushed &&
	git model pull -q upload &&
	test_cmp job/smoke.txt "$MODELS/upload/ci/smoke.txt"
'

test_expect_success PYTHON3,GIT_LFS 'stock git with git-lfs clones what the job published' '
	start_hub_server &&
	git lfs install --skip-repo >/dev/null &&
	git clone -q "$HUB_URL/org/tiny" stock &&
	cmp m/model.safetensors stock/model.safetensors &&
	cmp job/smoke.txt stock/ci/smoke.txt &&
	(cd stock && git lfs fsck >/dev/null)
'

test_done
