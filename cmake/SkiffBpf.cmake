# BPF pipeline: vmlinux.h from the running kernel's BTF, BPF C compiled with
# clang -target bpf -O2 -g, a libbpf skeleton per object from bpftool.
#
# skiff_bpf_object(NAME SOURCE file.bpf.c [HEADERS h...])
#   -> ${NAME}.bpf.o in ${CMAKE_BINARY_DIR}/bpf-obj, skeleton ${NAME}.skel.h,
#      and an INTERFACE target skiff_bpf_${NAME} that exposes the skeleton and
#      links libbpf.
set(SKIFF_BPF_OUT ${CMAKE_BINARY_DIR}/bpf-obj)
file(MAKE_DIRECTORY ${SKIFF_BPF_OUT})
set(SKIFF_VMLINUX_H ${SKIFF_BPF_OUT}/vmlinux.h)
set(SKIFF_BTF_SOURCE /sys/kernel/btf/vmlinux CACHE FILEPATH "BTF of the kernel to build BPF objects against")
add_custom_command(
  OUTPUT ${SKIFF_VMLINUX_H}
  COMMAND ${BPFTOOL_EXECUTABLE} btf dump file ${SKIFF_BTF_SOURCE} format c > ${SKIFF_VMLINUX_H}.tmp
  COMMAND ${CMAKE_COMMAND} -E rename ${SKIFF_VMLINUX_H}.tmp ${SKIFF_VMLINUX_H}
  COMMENT "bpftool: vmlinux.h from ${SKIFF_BTF_SOURCE}"
  VERBATIM)
add_custom_target(skiff_vmlinux_h DEPENDS ${SKIFF_VMLINUX_H})

execute_process(COMMAND uname -m OUTPUT_VARIABLE SKIFF_UNAME_M OUTPUT_STRIP_TRAILING_WHITESPACE)
if(SKIFF_UNAME_M STREQUAL "x86_64")
  set(SKIFF_BPF_ARCH x86)
elseif(SKIFF_UNAME_M STREQUAL "aarch64")
  set(SKIFF_BPF_ARCH arm64)
else()
  set(SKIFF_BPF_ARCH ${SKIFF_UNAME_M})
endif()

function(skiff_bpf_object NAME)
  cmake_parse_arguments(B "" "SOURCE" "HEADERS" ${ARGN})
  set(obj ${SKIFF_BPF_OUT}/${NAME}.bpf.o)
  set(debug_obj ${SKIFF_BPF_OUT}/${NAME}.bpf.debug.o)  # not matched by the install pattern *.bpf.o
  set(skel ${SKIFF_BPF_OUT}/${NAME}.skel.h)
  # -g gives the BTF libbpf needs, and DWARF nobody loads; `bpftool gen
  # object` keeps .BTF/.BTF.ext and drops the DWARF (sock_destroy: 638 kB ->
  # 16 kB), so the skeleton embedded in each daemon is that much smaller (and
  # so is what libbpf reads, and keeps resident, at open).
  add_custom_command(
    OUTPUT ${obj}
    COMMAND ${CLANG_EXECUTABLE} -target bpf -O2 -g -Wall -Werror
            -D__TARGET_ARCH_${SKIFF_BPF_ARCH}
            -I${SKIFF_BPF_OUT} -I${CMAKE_SOURCE_DIR}/bpf -I${CMAKE_SOURCE_DIR}/bpf/include
            -c ${CMAKE_CURRENT_SOURCE_DIR}/${B_SOURCE} -o ${debug_obj}
    COMMAND ${BPFTOOL_EXECUTABLE} gen object ${obj} ${debug_obj}
    DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/${B_SOURCE} ${B_HEADERS} ${SKIFF_VMLINUX_H}
    COMMENT "clang -target bpf ${B_SOURCE}"
    VERBATIM)
  add_custom_command(
    OUTPUT ${skel}
    COMMAND ${BPFTOOL_EXECUTABLE} gen skeleton ${obj} name ${NAME} > ${skel}.tmp
    COMMAND ${CMAKE_COMMAND} -E rename ${skel}.tmp ${skel}
    DEPENDS ${obj}
    COMMENT "bpftool gen skeleton ${NAME}"
    VERBATIM)
  add_custom_target(skiff_bpf_${NAME}_gen DEPENDS ${obj} ${skel})
  add_library(skiff_bpf_${NAME} INTERFACE)
  add_dependencies(skiff_bpf_${NAME} skiff_bpf_${NAME}_gen)
  target_include_directories(skiff_bpf_${NAME} INTERFACE ${SKIFF_BPF_OUT} ${CMAKE_SOURCE_DIR}/bpf/include)
  target_link_libraries(skiff_bpf_${NAME} INTERFACE PkgConfig::LIBBPF)
  add_library(skiff::bpf_${NAME} ALIAS skiff_bpf_${NAME})
endfunction()
