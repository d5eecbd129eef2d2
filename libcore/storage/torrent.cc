/*
 * torrent.cc - torrent.h over libtorrent-rasterbar 2.0 (C++17).  The only
 * C++ in libcore: every function here catches what libtorrent throws and
 * turns it into a gm_error, so no exception crosses into C.
 */

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

#include <libtorrent/add_torrent_params.hpp>
#include <libtorrent/alert_types.hpp>
#include <libtorrent/bencode.hpp>
#include <libtorrent/create_torrent.hpp>
#include <libtorrent/ip_filter.hpp>
#include <libtorrent/magnet_uri.hpp>
#include <libtorrent/peer_info.hpp>
#include <libtorrent/session.hpp>
#include <libtorrent/session_params.hpp>
#include <libtorrent/settings_pack.hpp>
#include <libtorrent/torrent_handle.hpp>
#include <libtorrent/torrent_info.hpp>
#include <libtorrent/torrent_status.hpp>

extern "C" {
#include "base/log.h"
}
#include "storage/torrent.h"

namespace {

char *dup_string(const std::string &s)
{
	char *p = static_cast<char *>(malloc(s.size() + 1));
	if (!p)
		abort(); /* as gm_xmalloc does: out of memory is not recoverable here */
	memcpy(p, s.c_str(), s.size() + 1);
	return p;
}

std::string hex_of(const lt::sha256_hash &h)
{
	static const char digits[] = "0123456789abcdef";
	std::string out;
	for (auto c : h) {
		auto b = static_cast<unsigned char>(c);
		out += digits[b >> 4];
		out += digits[b & 15];
	}
	return out;
}

/* Removes the scratch tree of gm_torrent_create: the links, then the
 * directories up to (and including) top. */
void remove_links(const std::string &top, const std::vector<std::string> &links)
{
	for (const auto &l : links) {
		unlink(l.c_str());
		for (std::string d = l.substr(0, l.rfind('/')); d.size() > top.size(); d = d.substr(0, d.rfind('/')))
			rmdir(d.c_str());
	}
	rmdir(top.c_str());
}

int mkdirs(const std::string &path)
{
	for (size_t i = 1; i <= path.size(); i++) {
		if (i == path.size() || path[i] == '/') {
			std::string d = path.substr(0, i);
			if (mkdir(d.c_str(), 0700) && errno != EEXIST)
				return -1;
		}
	}
	return 0;
}

/* A path inside a torrent must stay inside it. */
bool safe_relative(const std::string &p)
{
	if (p.empty() || p[0] == '/' || p.back() == '/')
		return false;
	size_t start = 0;
	while (start <= p.size()) {
		size_t end = p.find('/', start);
		if (end == std::string::npos)
			end = p.size();
		std::string part = p.substr(start, end - start);
		if (part.empty() || part == "." || part == "..")
			return false;
		start = end + 1;
	}
	return true;
}

} // namespace

extern "C" {

int gm_torrent_available(void)
{
	return 1;
}

int gm_torrent_create(const char *name, const gm_torrent_file *files, size_t n,
		      const char *const *web_seeds, size_t n_seeds, char **out, size_t *len, gm_error *err)
{
	/* libtorrent hashes files found under one directory by their torrent
	 * paths, so they are shown to it as symbolic links in a scratch
	 * directory next to the first file (the caller's temporary area is
	 * not known here, and the links are tiny) */
	std::vector<size_t> order(n);
	std::vector<std::string> links;
	std::string top;

	*out = nullptr;
	*len = 0;
	if (!n)
		return gm_error_set(err, GM_EINVAL, "a torrent needs at least one file");
	if (!safe_relative(name) || strchr(name, '/'))
		return gm_error_set(err, GM_EINVAL, "bad torrent name '%s'", name);
	for (size_t i = 0; i < n; i++) {
		order[i] = i;
		if (!safe_relative(files[i].path))
			return gm_error_set(err, GM_EINVAL, "bad path '%s' for a torrent", files[i].path);
		if (!files[i].size)
			return gm_error_set(err, GM_EINVAL, "%s is empty: a torrent holds no empty files",
					    files[i].path);
	}
	std::sort(order.begin(), order.end(),
		  [files](size_t a, size_t b) { return strcmp(files[a].path, files[b].path) < 0; });
	try {
		lt::file_storage fs;
		for (size_t i : order)
			fs.add_file(std::string(name) + "/" + files[i].path,
				    static_cast<std::int64_t>(files[i].size));
		lt::create_torrent ct(fs, 0, lt::create_torrent::v2_only);
		ct.set_creation_date(0);
		for (size_t i = 0; i < n_seeds; i++)
			ct.add_url_seed(web_seeds[i]);

		std::string first = files[order[0]].disk;
		top = first.substr(0, first.rfind('/') + 1) + ".gm-torrent-XXXXXX";
		std::vector<char> tmpl(top.begin(), top.end());
		tmpl.push_back('\0');
		if (!mkdtemp(tmpl.data()))
			return gm_error_errno(err, "cannot make a scratch directory for hashing (%s)", top.c_str());
		top = tmpl.data();
		for (size_t i : order) {
			std::string l = top + "/" + name + "/" + files[i].path;
			if (mkdirs(l.substr(0, l.rfind('/'))) || symlink(files[i].disk, l.c_str())) {
				int ret = gm_error_errno(err, "cannot link %s for hashing", l.c_str());
				remove_links(top, links);
				return ret;
			}
			links.push_back(l);
		}
		lt::error_code ec;
		lt::set_piece_hashes(ct, top, ec);
		remove_links(top, links);
		links.clear();
		if (ec)
			return gm_error_set(err, GM_EIO, "cannot hash the files of torrent %s: %s", name,
					    ec.message().c_str());
		std::vector<char> bytes;
		lt::bencode(std::back_inserter(bytes), ct.generate());
		*out = static_cast<char *>(malloc(bytes.size()));
		if (!*out)
			abort();
		memcpy(*out, bytes.data(), bytes.size());
		*len = bytes.size();
		return 0;
	} catch (const std::exception &e) {
		if (!links.empty())
			remove_links(top, links);
		return gm_error_set(err, GM_ERROR, "cannot make torrent %s: %s", name, e.what());
	}
}

int gm_torrent_parse(const void *data, size_t len, gm_torrent_info *out, gm_error *err)
{
	memset(out, 0, sizeof(*out));
	try {
		lt::error_code ec;
		lt::torrent_info ti(lt::span<const char>(static_cast<const char *>(data),
							 static_cast<std::ptrdiff_t>(len)), ec, lt::from_span);
		if (ec)
			return gm_error_set(err, GM_EFORMAT, "not a torrent: %s", ec.message().c_str());
		if (!ti.info_hashes().has_v2())
			return gm_error_set(err, GM_EUNSUPPORTED, "the torrent is not a BitTorrent v2 torrent");
		const lt::file_storage &fs = ti.files();
		std::vector<std::string> paths;
		std::vector<unsigned long long> sizes;
		std::string prefix = ti.name() + "/";
		for (lt::file_index_t i : fs.file_range()) {
			if (fs.pad_file_at(i))
				continue;
			std::string p = fs.file_path(i);
			if (p.compare(0, prefix.size(), prefix) == 0)
				p = p.substr(prefix.size());
			if (!safe_relative(p))
				return gm_error_set(err, GM_EFORMAT, "the torrent has a bad file path '%s'", p.c_str());
			paths.push_back(p);
			sizes.push_back(static_cast<unsigned long long>(fs.file_size(i)));
		}
		out->name = dup_string(ti.name());
		snprintf(out->infohash, sizeof(out->infohash), "%s", hex_of(ti.info_hashes().v2).c_str());
		out->magnet = dup_string(lt::make_magnet_uri(ti));
		out->n_files = paths.size();
		out->paths = static_cast<char **>(calloc(paths.size() + 1, sizeof(char *)));
		out->sizes = static_cast<unsigned long long *>(calloc(paths.size() + 1, sizeof(unsigned long long)));
		if (!out->paths || !out->sizes)
			abort();
		for (size_t i = 0; i < paths.size(); i++) {
			out->paths[i] = dup_string(paths[i]);
			out->sizes[i] = sizes[i];
			out->total += sizes[i];
		}
		out->piece_size = static_cast<unsigned>(ti.piece_length());
		const auto &ws = ti.web_seeds();
		out->web_seeds = static_cast<char **>(calloc(ws.size() + 1, sizeof(char *)));
		if (!out->web_seeds)
			abort();
		for (const auto &w : ws)
			out->web_seeds[out->n_web_seeds++] = dup_string(w.url);
		return 0;
	} catch (const std::exception &e) {
		gm_torrent_info_release(out);
		return gm_error_set(err, GM_EFORMAT, "not a torrent: %s", e.what());
	}
}

void gm_torrent_info_release(gm_torrent_info *ti)
{
	if (!ti)
		return;
	free(ti->name);
	free(ti->magnet);
	for (size_t i = 0; ti->paths && i < ti->n_files; i++)
		free(ti->paths[i]);
	free(ti->paths);
	free(ti->sizes);
	for (size_t i = 0; i < ti->n_web_seeds; i++)
		free(ti->web_seeds[i]);
	free(ti->web_seeds);
	memset(ti, 0, sizeof(*ti));
}

} // extern "C"

/* ------------------------------------------------------------ sessions */

struct gm_torrent_entry {
	lt::torrent_handle h;
	/* the engine's file indices and sizes of our files: it adds pad files
	 * between them (piece alignment), which torrent.h never shows */
	std::vector<lt::file_index_t> index;
	std::vector<std::int64_t> sizes;
	/* bytes each peer connection has given us, by endpoint, kept after
	 * it closes so the total only grows */
	std::map<std::string, std::int64_t> got_peer;
	int banned = 0;
	bool flushed = false, removed = false;
	std::string error;
};

struct gm_torrent_session {
	std::unique_ptr<lt::session> ses;
	std::vector<std::string> trackers;
	std::map<int, std::unique_ptr<gm_torrent_entry>> torrents;
	int next_id = 1;

	gm_torrent_entry *find(const lt::torrent_handle &h)
	{
		for (auto &t : torrents)
			if (t.second->h == h)
				return t.second.get();
		return nullptr;
	}
};

namespace {

void handle_alert(gm_torrent_session *s, lt::alert *a)
{
	if (auto *ta = dynamic_cast<lt::torrent_alert *>(a)) {
		gm_torrent_entry *t = s->find(ta->handle);
		if (t) {
			if (lt::alert_cast<lt::cache_flushed_alert>(a))
				t->flushed = true;
			else if (lt::alert_cast<lt::torrent_removed_alert>(a))
				t->removed = true;
			else if (lt::alert_cast<lt::peer_ban_alert>(a))
				t->banned++;
			else if (auto *fe = lt::alert_cast<lt::file_error_alert>(a))
				t->error = fe->message();
			else if (auto *te = lt::alert_cast<lt::torrent_error_alert>(a))
				t->error = te->message();
		} else if (lt::alert_cast<lt::torrent_removed_alert>(a)) {
			/* the handle is no longer valid for find(): match by hash */
			auto *ra = lt::alert_cast<lt::torrent_removed_alert>(a);
			for (auto &e : s->torrents)
				if (!e.second->h.is_valid() || e.second->h.info_hashes() == ra->info_hashes)
					e.second->removed = true;
		}
	}
	if (a->category() & (lt::alert_category::error | lt::alert_category::peer))
		gm_debug("torrent: %s", a->message().c_str());
}

void collect_peers(gm_torrent_entry *t)
{
	std::vector<lt::peer_info> peers;
	t->h.get_peer_info(peers);
	for (const auto &p : peers) {
		std::string key = p.ip.address().to_string() + ":" + std::to_string(p.ip.port());
		if (p.connection_type == lt::peer_info::standard_bittorrent) {
			auto &v = t->got_peer[key];
			v = std::max(v, p.total_download);
		}
	}
}

} // namespace

extern "C" {

int gm_torrent_session_new(const gm_torrent_session_opts *opts, gm_torrent_session **out, gm_error *err)
{
	*out = nullptr;
	try {
		lt::settings_pack p;
		std::string iface = opts->listen && *opts->listen ? opts->listen : "0.0.0.0";
		std::string listen = iface + ":" + std::to_string(opts->port);
		if (iface == "0.0.0.0")
			listen += ",[::]:" + std::to_string(opts->port);
		p.set_str(lt::settings_pack::listen_interfaces, listen);
		p.set_str(lt::settings_pack::user_agent, "git-model/" GM_VERSION);
		p.set_int(lt::settings_pack::alert_mask, lt::alert_category::error | lt::alert_category::status |
			  lt::alert_category::peer | lt::alert_category::storage | lt::alert_category::tracker);
		p.set_bool(lt::settings_pack::enable_dht, opts->dht != 0);
		p.set_bool(lt::settings_pack::enable_lsd, opts->lsd != 0);
		p.set_bool(lt::settings_pack::enable_upnp, false);
		p.set_bool(lt::settings_pack::enable_natpmp, false);
		/* machines behind one address (a cluster behind NAT, or tests on
		 * 127.0.0.1) are still different peers */
		p.set_bool(lt::settings_pack::allow_multiple_connections_per_ip, true);
		p.set_bool(lt::settings_pack::announce_to_all_trackers, true);
		p.set_bool(lt::settings_pack::announce_to_all_tiers, true);
		/* TCP only: one transport is easier to reason about on a LAN, and
		 * uTP's congestion control buys nothing there */
		p.set_bool(lt::settings_pack::enable_outgoing_utp, false);
		p.set_bool(lt::settings_pack::enable_incoming_utp, false);
		/* a failed web seed or peer is tried again soon: a download here
		 * is short-lived, not a background job that can wait a minute */
		p.set_int(lt::settings_pack::urlseed_wait_retry, 3);
		p.set_int(lt::settings_pack::min_reconnect_time, 2);
		p.set_int(lt::settings_pack::peer_connect_timeout, 5);
		p.set_int(lt::settings_pack::upload_rate_limit, static_cast<int>(opts->upload_limit));
		p.set_int(lt::settings_pack::download_rate_limit, static_cast<int>(opts->download_limit));
		auto s = std::make_unique<gm_torrent_session>();
		s->ses = std::make_unique<lt::session>(lt::session_params(p));
		/* rate limits apply to local peers too (libtorrent exempts them by
		 * default): on a LAN the uplink being shared is the local one */
		lt::ip_filter f;
		std::uint32_t global = 1u << static_cast<std::uint32_t>(lt::session::global_peer_class_id);
		f.add_rule(lt::make_address("0.0.0.0"), lt::make_address("255.255.255.255"), global);
		f.add_rule(lt::make_address("::"), lt::make_address("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), global);
		s->ses->set_peer_class_filter(f);
		for (size_t i = 0; i < opts->n_trackers; i++)
			s->trackers.push_back(opts->trackers[i]);
		*out = s.release();
		return 0;
	} catch (const std::exception &e) {
		return gm_error_set(err, GM_ERROR, "cannot start a BitTorrent session: %s", e.what());
	}
}

void gm_torrent_session_free(gm_torrent_session *s)
{
	if (!s)
		return;
	try {
		/* the destructor waits for the trackers to hear "stopped" (bounded
		 * by stop_tracker_timeout) */
		lt::settings_pack p;
		p.set_int(lt::settings_pack::stop_tracker_timeout, 1);
		s->ses->apply_settings(p);
	} catch (const std::exception &) {
	}
	delete s;
}

int gm_torrent_session_port(gm_torrent_session *s)
{
	return s->ses->listen_port();
}

int gm_torrent_session_add(gm_torrent_session *s, const gm_torrent_add_opts *opts, int *id, gm_error *err)
{
	try {
		lt::error_code ec;
		auto ti = std::make_shared<lt::torrent_info>(
			lt::span<const char>(static_cast<const char *>(opts->data), static_cast<std::ptrdiff_t>(opts->len)),
			ec, lt::from_span);
		if (ec)
			return gm_error_set(err, GM_EFORMAT, "not a torrent: %s", ec.message().c_str());
		if (opts->no_web_seeds)
			ti->set_web_seeds({});
		lt::add_torrent_params atp;
		auto t = std::make_unique<gm_torrent_entry>();
		const lt::file_storage &fs = ti->files();
		int i = 0;
		for (lt::file_index_t f : fs.file_range()) {
			/* priorities only when some file is skipped: libtorrent
			 * leaves seed mode when any is set to "don't download" */
			if (fs.pad_file_at(f)) {
				if (opts->want)
					atp.file_priorities.push_back(lt::dont_download);
				continue;
			}
			/* an absolute name: the files live where the caller says (the
			 * LFS store, when seeding), not under save_path */
			atp.renamed_files[f] = opts->disk[i];
			if (opts->want)
				atp.file_priorities.push_back(opts->want[i] ? lt::default_priority : lt::dont_download);
			t->index.push_back(f);
			t->sizes.push_back(fs.file_size(f));
			i++;
		}
		atp.save_path = "/";
		atp.ti = ti;
		atp.trackers = s->trackers;
		for (size_t k = 0; k < opts->n_web_seeds; k++)
			atp.url_seeds.push_back(opts->web_seeds[k]);
		if (opts->seed)
			atp.flags |= lt::torrent_flags::seed_mode;
		/* not queued behind other torrents: each one here was asked for */
		atp.flags &= ~lt::torrent_flags::auto_managed;
		atp.flags &= ~lt::torrent_flags::paused;
		t->h = s->ses->add_torrent(std::move(atp), ec);
		if (ec)
			return gm_error_set(err, GM_ERROR, "cannot add torrent %s: %s", ti->name().c_str(),
					    ec.message().c_str());
		*id = s->next_id++;
		s->torrents[*id] = std::move(t);
		return 0;
	} catch (const std::exception &e) {
		return gm_error_set(err, GM_ERROR, "cannot add a torrent: %s", e.what());
	}
}

int gm_torrent_session_stat(gm_torrent_session *s, int id, gm_torrent_stat *st, gm_error *err)
{
	memset(st, 0, sizeof(*st));
	auto it = s->torrents.find(id);
	if (it == s->torrents.end())
		return gm_error_set(err, GM_ENOENT, "no torrent %d in the session", id);
	gm_torrent_entry *t = it->second.get();
	try {
		lt::torrent_status ts = t->h.status();
		collect_peers(t);
		switch (ts.state) {
		case lt::torrent_status::checking_files:
		case lt::torrent_status::checking_resume_data:
			st->state = GM_TORRENT_CHECKING;
			break;
		case lt::torrent_status::finished:
			st->state = GM_TORRENT_FINISHED;
			break;
		case lt::torrent_status::seeding:
			st->state = GM_TORRENT_SEEDING;
			break;
		default:
			st->state = GM_TORRENT_DOWNLOADING;
		}
		if (ts.errc) {
			st->state = GM_TORRENT_FAILED;
			snprintf(st->error, sizeof(st->error), "%s", ts.errc.message().c_str());
		} else if (!t->error.empty()) {
			snprintf(st->error, sizeof(st->error), "%s", t->error.c_str());
		}
		snprintf(st->infohash, sizeof(st->infohash), "%s", hex_of(ts.info_hashes.v2).c_str());
		snprintf(st->name, sizeof(st->name), "%s", ts.name.c_str());
		st->wanted = static_cast<unsigned long long>(ts.total_wanted);
		st->wanted_done = static_cast<unsigned long long>(ts.total_wanted_done);
		for (const auto &p : t->got_peer)
			st->from_peers += static_cast<unsigned long long>(p.second);
		/* the split is sampled (a connection that closes between two
		 * samples loses its last bytes); the total is exact */
		auto total = static_cast<unsigned long long>(ts.total_payload_download);
		st->from_peers = std::min(st->from_peers, total);
		st->from_web = total - st->from_peers;
		st->uploaded = static_cast<unsigned long long>(ts.total_payload_upload);
		st->download_rate = ts.download_payload_rate;
		st->upload_rate = ts.upload_payload_rate;
		st->peers = ts.num_peers;
		st->seeds = ts.num_seeds;
		std::vector<lt::peer_info> peers;
		t->h.get_peer_info(peers);
		for (const auto &p : peers)
			if (p.connection_type == lt::peer_info::web_seed || p.connection_type == lt::peer_info::http_seed)
				st->web_seeds++;
		st->peers -= st->web_seeds;
		if (st->peers < 0)
			st->peers = 0;
		st->banned = t->banned;
		return 0;
	} catch (const std::exception &e) {
		return gm_error_set(err, GM_ERROR, "cannot read the torrent's status: %s", e.what());
	}
}

int gm_torrent_session_file_done(gm_torrent_session *s, int id, size_t file)
{
	auto it = s->torrents.find(id);
	if (it == s->torrents.end())
		return 0;
	gm_torrent_entry *t = it->second.get();
	try {
		std::vector<std::int64_t> prog;
		t->h.file_progress(prog, lt::torrent_handle::piece_granularity);
		if (file >= t->index.size())
			return 0;
		size_t k = static_cast<size_t>(static_cast<int>(t->index[file]));
		return k < prog.size() && prog[k] == t->sizes[file];
	} catch (const std::exception &) {
		return 0;
	}
}

void gm_torrent_session_poll(gm_torrent_session *s, int timeout_ms)
{
	try {
		s->ses->wait_for_alert(std::chrono::milliseconds(timeout_ms));
		std::vector<lt::alert *> alerts;
		s->ses->pop_alerts(&alerts);
		for (lt::alert *a : alerts)
			handle_alert(s, a);
	} catch (const std::exception &e) {
		gm_debug("torrent: %s", e.what());
	}
}

int gm_torrent_session_remove(gm_torrent_session *s, int id, gm_error *err)
{
	auto it = s->torrents.find(id);
	if (it == s->torrents.end())
		return gm_error_set(err, GM_ENOENT, "no torrent %d in the session", id);
	gm_torrent_entry *t = it->second.get();
	try {
		using clock = std::chrono::steady_clock;
		/* every block written is in the files once the cache is flushed;
		 * then the files are closed by the removal */
		t->h.flush_cache();
		for (auto end = clock::now() + std::chrono::seconds(30); !t->flushed && clock::now() < end;)
			gm_torrent_session_poll(s, 100);
		s->ses->remove_torrent(t->h);
		for (auto end = clock::now() + std::chrono::seconds(30); !t->removed && clock::now() < end;)
			gm_torrent_session_poll(s, 100);
		bool ok = t->flushed && t->removed;
		s->torrents.erase(it);
		if (!ok)
			return gm_error_set(err, GM_EIO, "the BitTorrent engine did not release the files in 30 s");
		return 0;
	} catch (const std::exception &e) {
		return gm_error_set(err, GM_ERROR, "cannot remove the torrent: %s", e.what());
	}
}

} // extern "C"
