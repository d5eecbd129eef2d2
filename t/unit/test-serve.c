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

int main(void)
{
	test_parse_listen();
	test_model_id();
	test_not_loaded();
	return tap_done();
}
