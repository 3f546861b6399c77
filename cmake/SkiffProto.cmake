# skiff_proto_library(NAME PROTO_ROOT dir PROTOS a.proto ... [GRPC] [DEPS lib...])
# Runs protoc (and grpc_cpp_plugin with GRPC) on PROTOS, relative to PROTO_ROOT,
# and builds the generated code into a static library NAME.
function(skiff_proto_library NAME)
  cmake_parse_arguments(P "GRPC" "PROTO_ROOT" "PROTOS;DEPS;IMPORT_DIRS" ${ARGN})
  set(out ${CMAKE_CURRENT_BINARY_DIR}/${NAME}_gen)
  file(MAKE_DIRECTORY ${out})
  set(srcs)
  set(import_args -I${P_PROTO_ROOT})
  foreach(d ${P_IMPORT_DIRS})
    list(APPEND import_args -I${d})
  endforeach()
  foreach(proto ${P_PROTOS})
    string(REGEX REPLACE "\\.proto$" "" base ${proto})
    set(gen ${out}/${base}.pb.cc ${out}/${base}.pb.h)
    set(args --cpp_out=${out})
    if(P_GRPC)
      list(APPEND gen ${out}/${base}.grpc.pb.cc ${out}/${base}.grpc.pb.h)
      list(APPEND args --grpc_out=${out} --plugin=protoc-gen-grpc=${GRPC_CPP_PLUGIN})
    endif()
    add_custom_command(
      OUTPUT ${gen}
      COMMAND ${PROTOC_EXECUTABLE} ${import_args} ${args} ${P_PROTO_ROOT}/${proto}
      DEPENDS ${P_PROTO_ROOT}/${proto}
      COMMENT "protoc ${proto}"
      VERBATIM)
    list(APPEND srcs ${gen})
  endforeach()
  add_library(${NAME} STATIC ${srcs})
  target_include_directories(${NAME} PUBLIC ${out})
  # Generated code is not ours to lint.
  target_compile_options(${NAME} PRIVATE -Wno-error -w)
  target_link_libraries(${NAME} PUBLIC protobuf::libprotobuf gRPC::grpc++ ${P_DEPS})
endfunction()
