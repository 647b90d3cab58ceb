# Run at every build (the famtrain_build_info target): writes the git commit of the source tree
# into build_info_commit.h. configure_file rewrites the header only when its text changes, so a
# build recompiles build_info.cc only after a commit or a change of the tree's dirty state.
#   cmake -DSOURCE_DIR=<repo> -DOUTPUT=<header> -P cmake/build_info.cmake
set(FAM_GIT_COMMIT "unknown (not a git checkout)")
find_program(GIT_EXECUTABLE git)
if(GIT_EXECUTABLE AND EXISTS "${SOURCE_DIR}/.git")
  execute_process(COMMAND "${GIT_EXECUTABLE}" -C "${SOURCE_DIR}" rev-parse --short=12 HEAD
                  OUTPUT_VARIABLE commit OUTPUT_STRIP_TRAILING_WHITESPACE
                  RESULT_VARIABLE commit_rc ERROR_QUIET)
  if(commit_rc EQUAL 0 AND commit)
    execute_process(COMMAND "${GIT_EXECUTABLE}" -C "${SOURCE_DIR}" status --porcelain
                            --untracked-files=no
                    OUTPUT_VARIABLE dirty RESULT_VARIABLE dirty_rc ERROR_QUIET)
    set(FAM_GIT_COMMIT "${commit}")
    if(dirty_rc EQUAL 0 AND NOT dirty STREQUAL "")
      string(APPEND FAM_GIT_COMMIT " (with uncommitted changes)")
    endif()
  endif()
endif()
file(WRITE "${OUTPUT}.in" "#define FAM_GIT_COMMIT \"@FAM_GIT_COMMIT@\"\n")
configure_file("${OUTPUT}.in" "${OUTPUT}" @ONLY)
