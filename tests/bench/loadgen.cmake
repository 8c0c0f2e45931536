# The load generator that scripts/bench runs against a live `handsel serve` (see loadgen.c).
# It is neither a test nor a bench_* program: it needs a running server and a deployed process,
# so scripts/bench starts both and calls it with options. It speaks only the wire protocol, so
# it links nghttp2 and msgpack-c, not handsel_lib. The binary lands at build/<type>/tests/loadgen.
add_executable(handsel_loadgen ${CMAKE_CURRENT_LIST_DIR}/loadgen.c)
target_link_libraries(handsel_loadgen PRIVATE PkgConfig::NGHTTP2 PkgConfig::MSGPACK
                      Threads::Threads)
set_target_properties(handsel_loadgen PROPERTIES OUTPUT_NAME loadgen
                      RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
