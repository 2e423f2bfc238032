# The fuzz targets' invariants over their committed corpus, in every ctest run: each target's
# LLVMFuzzerTestOneInput linked with corpus_replay_main.cc instead of libFuzzer (no clang
# needed; in build-asan/ they run under ASan + UBSan). Fuzzing itself is tools/fuzz.sh.
set(FSRST_FUZZ_DIR ${CMAKE_CURRENT_LIST_DIR})

add_executable(image_codec_corpus_replay
  ${FSRST_FUZZ_DIR}/image_codec_fuzzer.cc ${FSRST_FUZZ_DIR}/corpus_replay_main.cc)
target_link_libraries(image_codec_corpus_replay PRIVATE fsrst::imaging absl::status
                      absl::statusor absl::strings)

add_executable(request_validation_corpus_replay
  ${FSRST_FUZZ_DIR}/request_validation_fuzzer.cc ${FSRST_FUZZ_DIR}/corpus_replay_main.cc
  ${PROJECT_SOURCE_DIR}/server/request_validation.cc)
target_link_libraries(request_validation_corpus_replay PRIVATE fsrst::imaging fsrst::common
                      fsrst::proto absl::status absl::statusor absl::strings absl::str_format)

foreach(target image_codec request_validation)
  fsrst_warnings(${target}_corpus_replay)
  add_test(NAME ${target}_fuzzer.CorpusReplay
           COMMAND ${target}_corpus_replay ${FSRST_FUZZ_DIR}/corpus/${target})
endforeach()
