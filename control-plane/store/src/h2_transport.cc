// A lean HTTP/2 transport for the etcd v3 API (CPU per request under many
// connections). Filled in by the transport work.
namespace skiff::store {}
