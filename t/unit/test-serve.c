/*
 * test-serve.c - unit tests for serve.h's helpers and for the server
 * before its model is loaded (t/t6000-serve.sh tests it loaded, with real
 * clients).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/error.h"
#include "base/fs.h"
#include "serve/serve.h"
#include "tap.h"

static void test_parse_listen(void)
{
	static const struct {
		const char *spec, *addr;
		int port;
	} good[] = {
		{ "8080", NULL, 8080 },
		{ "0", NULL, 0 },
		{ "0.0.0.0:80", "0.0.0.0", 80 },
		{ "localhost:65535", "localhost", 65535 },
		{ "[::1]:8080", "::1", 8080 },
	};
	static const char *const bad[] = { "", "x", "-1", "65536", "8080x", ":80", "1.2.3.4:", "::1:80", "[::1]80",
					   "[]:80", "1.2.3.4: 80" };
	gm_error err = GM_ERROR_INIT;
	size_t i;

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		char *addr = NULL;
		int port = -1, ret = gm_serve_parse_listen(good[i].spec, &addr, &port, &err);

		ok(!ret && port == good[i].port && (good[i].addr ? addr && !strcmp(addr, good[i].addr) : !addr),
		   "parse_listen '%s': address %s, port %d", good[i].spec, addr ? addr : "(none)", port);
		free(addr);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *addr = NULL;
		int port = -1, ret = gm_serve_parse_listen(bad[i], &addr, &port, &err);

		ok_error(ret, &err, GM_EINVAL, "[ADDR:]PORT", "parse_listen refuses '%s'", bad[i]);
		ok(!addr, "parse_listen '%s': no address left allocated", bad[i]);
	}
}

static void test_model_id(void)
{
	char *id;

	id = gm_serve_model_id("/no/such/dir/Qwen3-0.6B/");
	ok(!strcmp(id, "Qwen3-0.6B"), "model id: the base name, trailing slashes dropped (%s)", id);
	free(id);
	id = gm_serve_model_id("pocket");
	ok(!strcmp(id, "pocket"), "model id: a bare name (%s)", id);
	free(id);
}

/* GET path on 127.0.0.1:port; the whole answer into out. */
static int http_get(int port, const char *path, gm_buf *out)
{
	struct sockaddr_in a;
	char buf[4096];
	ssize_t n;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t)port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a))) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	snprintf(buf, sizeof(buf), "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path);
	if (write(fd, buf, strlen(buf)) != (ssize_t)strlen(buf)) {
		close(fd);
		return -1;
	}
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		gm_buf_add(out, buf, (size_t)n);
	close(fd);
	return 0;
}

static void test_not_loaded(void)
{
	gm_serve_config c;
	gm_serve *s = NULL;
	gm_error err = GM_ERROR_INIT;
	gm_buf b = GM_BUF_INIT;
	int ret;

	gm_serve_config_init(&c);
	ok(c.n_parallel == 1 && c.queue_size == 16 && c.max_body == 4u << 20 && c.shutdown_timeout_s == 10,
	   "config defaults: 1 sequence, a queue of 16, 4 MiB bodies, 10 s to stop");
	c.model_dir = "/no/such/model";
	c.port = 0;
	ret = gm_serve_start(&c, &s, &err);
	ok(!ret && s && gm_serve_port(s) > 0, "start on port 0: listening on %s (%s)", s ? gm_serve_address(s) : "-",
	   err.msg);
	if (ret)
		return;
	ret = http_get(gm_serve_port(s), "/health", &b);
	ok(!ret && strstr(b.buf, "HTTP/1.1 503") && strstr(b.buf, "{\"status\":\"loading\"}"),
	   "/health is 503 while the model is not loaded");
	gm_buf_reset(&b);
	ret = http_get(gm_serve_port(s), "/v1/models", &b);
	ok(!ret && strstr(b.buf, "HTTP/1.1 503") && strstr(b.buf, "\"code\":\"model_loading\""),
	   "/v1/models is 503 (model_loading) too");
	ret = gm_serve_load(s, &err);
	ok(ret < 0 && strstr(err.msg, "/no/such/model"), "load: a missing model fails, naming it (%s)", err.msg);
	gm_buf_reset(&b);
	ret = http_get(gm_serve_port(s), "/health", &b);
	ok(!ret && strstr(b.buf, "HTTP/1.1 503"), "/health stays 503 after a failed load");
	ok(gm_serve_stop(s) == 0, "stop: nothing to cancel");
	gm_buf_reset(&b);
	ok(http_get(gm_serve_port(s), "/health", &b) < 0, "stopped: the port is closed");
	gm_serve_free(s);
	gm_buf_release(&b);

	c.n_parallel = 0;
	ret = gm_serve_start(&c, &s, &err);
	ok_error(ret, &err, GM_EINVAL, "at least 1 parallel", "start refuses 0 parallel sequences");
	c.n_parallel = 1;
	c.addr = "203.0.113.1"; /* TEST-NET-3: not an address of this machine */
	ret = gm_serve_start(&c, &s, &err);
	ok_error(ret, &err, GM_EIO, "cannot listen on 203.0.113.1", "start: an address that is not ours");
}

/* A body checked without HTTP (gm_serve_check_request, what fuzz-serve-request drives). */
static int check(gm_serve *s, int chat, const char *body, gm_serve_request_check *r)
{
	return gm_serve_check_request(s, chat, body, strlen(body), r);
}

static void test_check_request(void)
{
	gm_serve_config c;
	gm_serve *s = NULL;
	gm_error err = GM_ERROR_INIT;
	gm_serve_request_check r;
	char *dir = gm_path_join(tap_srcdir(), "contrib/models/pocket-qwen3");
	int ret;

	gm_serve_config_init(&c);
	c.model_dir = dir;
	c.model_id = "pocket-qwen3";
	c.port = 0;
	c.n_threads = 1;
	ret = gm_serve_start(&c, &s, &err);
	ok(!ret, "start with the pocket model (%s)", err.msg);
	if (ret) {
		free(dir);
		return;
	}
	ok(check(s, 0, "{}", &r) == 503 && r.message[0], "check before load: 503 (%s)", r.message);
	ret = gm_serve_load(s, &err);
	ok(!ret, "load the pocket model (%s)", err.msg);
	if (!ret) {
		ret = check(s, 0, "{\"model\":\"pocket-qwen3\",\"prompt\":[1,2,3],\"max_tokens\":4,\"temperature\":0.5,"
			    "\"n\":2,\"logit_bias\":{\"7\":-3,\"9\":4}}", &r);
		ok(ret == 200 &&
		   r.n_prompt == 3 && r.prompt_min == 1 && r.prompt_max == 3 && r.max_tokens == 4 && r.n == 2 &&
		   r.temperature == 0.5 && r.n_bias == 2 && r.min_bias == -3 && r.max_bias == 4 &&
		   r.bias_min_id == 7 && r.bias_max_id == 9 && !r.message[0],
		   "check: a completion is accepted with its numbers (%d %s)", r.status, r.message);
		ok(check(s, 1, "{\"model\":\"pocket-qwen3\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
			 &r) == 200 && r.n_prompt > 1 && r.max_tokens == -1,
		   "check: a chat request is rendered and tokenized (%zu tokens; %s)", r.n_prompt, r.message);
		ok(check(s, 1, "{\"model\":\"nope\",\"messages\":[]}", &r) == 404 && !strcmp(r.code, "model_not_found"),
		   "check: another model is a 404 (%s)", r.message);
		ok(check(s, 0, "{\"model\":\"pocket-qwen3\",\"prompt\":\"x\",\"top_p\":0}", &r) == 400 &&
		   !strcmp(r.code, "invalid_value") && strstr(r.message, "top_p"),
		   "check: a number out of range is a 400 naming it (%s)", r.message);
		ok(check(s, 0, "", &r) == 400 && !strcmp(r.code, "invalid_json"), "check: an empty body (%s)",
		   r.message);
	}
	gm_serve_stop(s);
	gm_serve_free(s);
	free(dir);
}

int main(void)
{
	test_parse_listen();
	test_model_id();
	test_not_loaded();
	test_check_request();
	return tap_done();
}
